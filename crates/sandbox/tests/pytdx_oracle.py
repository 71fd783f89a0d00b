"""The reference TDX client reading what our code reads, for crates/sandbox/tests/tdx.rs.

stdin: {"host": ..., "port": ..., "calls": [["count", market], ["list", market, start],
        ["bars", category, market, code, start, count], ["xdxr", market, code]]}
stdout: {"calls": [result per call, as pytdx returns it], "captured": {"hex": ..., "bars": [...]}}

The calls go through pytdx's own socket client (TdxHq_API: its setup packets, its header and body
reads, its zlib handling). "captured" is the real-server answer recorded in pytdx's source
(the "recv:" line in get_security_bars.py) and pytdx's parse of it.
"""

import json
import sys

import pytdx.parser.get_security_bars as bars_module
from pytdx.hq import TdxHq_API
from pytdx.parser.get_security_bars import GetSecurityBarsCmd


def plain(rows):
    return [dict(row) for row in rows]


def main():
    plan = json.load(sys.stdin)
    api = TdxHq_API()
    results = []
    with api.connect(plan["host"], plan["port"], time_out=10):
        for call in plan["calls"]:
            kind, args = call[0], call[1:]
            if kind == "count":
                results.append(api.get_security_count(*args))
            elif kind == "list":
                results.append(plain(api.get_security_list(*args)))
            elif kind == "bars":
                results.append(plain(api.get_security_bars(*args)))
            elif kind == "xdxr":
                results.append(plain(api.get_xdxr_info(*args)))
            else:
                raise SystemExit("unknown call " + kind)

    with open(bars_module.__file__, encoding="utf-8") as source:
        recv = next(line for line in source if line.startswith("recv:"))
    answer = bytes.fromhex(recv.split(":", 1)[1].strip())
    command = GetSecurityBarsCmd(None)
    command.setParams(9, 0, "000001", 0, 10)
    captured = plain(command.parseResponse(answer[16:]))
    json.dump({"calls": results, "captured": {"hex": answer.hex(), "bars": captured}}, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
