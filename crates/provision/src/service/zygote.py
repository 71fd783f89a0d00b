# The gateway zygote (see zygote.rs): imports every library hermes-agent depends on, once, then forks a
# gateway per request. The forks share those pages copy-on-write, so a gateway's own memory is mostly
# hermes' modules and its conversation state.
#
# hermes itself is never imported here: its modules cache HERMES_HOME at import, and each gateway runs
# with its own. Nothing of a user's is ever in this process either; it only learns, per fork, a profile's
# command line, environment, directory and OS user.
#
# Protocol, one JSON object per line. In, on stdin:
#     {"id": N, "argv": [...], "env": {...}, "cwd": "...", "uid": U or null, "gid": G or null}
# Out, on stdout: {"id": N, "pid": P} or {"id": N, "error": "..."}, and whenever a gateway ends,
# {"exited": P, "status": S} with S the raw wait status. EOF on stdin stops every gateway and the zygote.
import ctypes
import gc
import importlib
import importlib.metadata
import json
import os
import re
import selectors
import signal
import sys
import threading

HERMES = "hermes-agent"
HERMES_EXTRAS = ("mcp",)
# The WeChat adapter's packages, installed by name rather than through hermes' `messaging` extra.
ADAPTER_PACKAGES = ("aiohttp", "qrcode", "brotlicffi")
# Modules a gateway imports only once it runs, which importing the libraries above does not: the
# standard library's, and the libraries' own lazy imports (openai loads its API resources on first use).
# Traced in a gateway of hermes-agent 0.19.0 after a conversation; one missing here costs memory, not
# correctness.
LAZY_IMPORTS = (
    "sqlite3", "email.mime.text", "email.mime.multipart", "http.cookies", "http.server", "concurrent.futures.thread",
    "difflib", "gzip", "html.parser", "tarfile", "imaplib", "smtplib", "webbrowser", "faulthandler", "pkgutil",
    "unittest.mock", "openai.resources", "aiohttp.web", "anyio._backends._asyncio", "anyio.streams.tls",
    "websockets.asyncio.client", "encodings.utf_8_sig",
)

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38


def requirements(dist, extras=()):
    """The distributions `dist` requires, with only the named extras."""
    names = []
    for requirement in importlib.metadata.requires(dist) or []:
        spec, _, marker = requirement.partition(";")
        if "extra ==" in marker and not any(f'extra == "{extra}"' in marker for extra in extras):
            continue
        names.append(re.split(r"[<>=!~\[ (]", spec.strip())[0])
    return names


def libraries():
    """Top-level modules of every distribution hermes needs, transitively, in the order it needs them."""
    modules_of = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(normal(dist), []).append(module)
    own = set(modules_of.get(normal(HERMES), []))
    seen, order = set(), []
    pending = requirements(HERMES, HERMES_EXTRAS) + list(ADAPTER_PACKAGES)
    while pending:
        dist = normal(pending.pop(0))
        if dist in seen:
            continue
        seen.add(dist)
        try:
            pending += requirements(dist)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement that is not installed
        order += [m for m in modules_of.get(dist, []) if not m.startswith("_") and m not in own]
    return order + list(LAZY_IMPORTS)


def normal(dist):
    return re.sub(r"[-_.]+", "-", dist).lower()


def preload():
    loaded, failed = 0, []
    for module in libraries():
        try:
            importlib.import_module(module)
            loaded += 1
        except Exception as error:  # an import that fails here fails (or is skipped) in the gateway too
            failed.append(f"{module}: {error}")
    if threading.active_count() != 1:
        # Forking a process with threads forks only the calling one, with others' locks held.
        raise SystemExit(f"zygote: preloading started threads: {threading.enumerate()}")
    gc.collect()
    gc.freeze()  # keep the collector from writing to (and so copying) the shared objects in every fork
    return loaded, failed


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def become_gateway(request, zygote_pid, own_fds):
    """In the fork: become the profile's gateway and run hermes. Never returns."""
    code = 1
    try:
        become_profile(request, zygote_pid, own_fds)
    except BaseException as error:
        try:
            # Still on the zygote's stderr, which is the supervisor's: hermes has no log of this gateway yet.
            sys.stderr.write(f"zygote: fork for {request.get('argv')} failed before hermes ran: {type(error).__name__}: {error}\n")
            sys.stderr.flush()
        finally:
            os._exit(code)
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)  # hermes keeps its own logs under the profile's logs/
        os.close(null)
        from hermes_cli.main import main

        result = main()
        code = result if isinstance(result, int) else 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        os._exit(code)


def become_profile(request, zygote_pid, own_fds):
    """Drops the zygote's state, then takes the profile's user, directory, environment and command line."""
    signal.set_wakeup_fd(-1)
    for fd in own_fds:
        os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the one disposition the zygote changed
    os.setsid()  # its own session and process group, which a stop signals whole
    if request.get("uid") is not None:
        os.setgroups([])
        os.setgid(request["gid"])
        os.setuid(request["uid"])
    libc = ctypes.CDLL(None, use_errno=True)
    # After setuid, which clears it: the gateway dies with the zygote.
    for option, value in ((PR_SET_PDEATHSIG, signal.SIGKILL), (PR_SET_NO_NEW_PRIVS, 1)):
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option})")
    if os.getppid() != zygote_pid:
        raise RuntimeError("the zygote ended while forking")
    os.chdir(request["cwd"])
    os.environ.clear()
    show_as(request["argv"], request["env"])
    os.environ.update(request["env"])
    # As the `hermes` script runs: its own directory first on the path, not the working directory.
    sys.path[0] = os.path.dirname(sys.executable)
    sys.argv = ["hermes", *request["argv"]]


def show_as(argv, env):
    """Makes /proc/<pid>/cmdline and environ (so ps, and hermes' own check of its pid file) show this
    gateway's command line and environment, not the zygote's, by rewriting the regions they are read from
    in place. libc's environment must no longer point into that region (os.environ is cleared first);
    the Rust side reserves room there (RESERVE_VARIABLE). What does not fit is left out, not cut."""
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    arg_start, arg_end, env_start, env_end = (int(fields[i]) for i in range(45, 49))  # proc(5): 48–51
    for (start, end), items in (((arg_start, arg_end), ["hermes", *argv]), ((env_start, env_end), [f"{k}={v}" for k, v in env.items()])):
        block = b""
        for item in items:
            entry = item.encode() + b"\0"
            if len(block) + len(entry) > end - start:
                break
            block += entry
        ctypes.memmove(start, block.ljust(end - start, b"\0"), end - start)


def spawn(request, own_fds):
    zygote_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        become_gateway(request, zygote_pid, own_fds)
    return pid


def reap(children):
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        send({"exited": pid, "status": status})


def stop_all(children):
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def serve():
    loaded, failed = preload()
    send({"ready": os.getpid(), "preloaded": loaded, "failed": failed})
    children = set()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "request")
    selector.register(wake_read, selectors.EVENT_READ, "child")
    own_fds = (wake_read, wake_write, selector.fileno())
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                os.read(wake_read, 512)
                reap(children)
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                stop_all(children)
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                handle(line, children, own_fds)


def handle(line, children, own_fds):
    request = {}
    try:
        request = json.loads(line)
        pid = spawn(request, own_fds)
        children.add(pid)
        send({"id": request["id"], "pid": pid})
    except Exception as error:
        send({"id": request.get("id") if isinstance(request, dict) else None, "error": f"{type(error).__name__}: {error}"})


if __name__ == "__main__":
    serve()
