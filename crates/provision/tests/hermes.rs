//! Against the real hermes 0.19.0 CLI: template install, clone, planting, persona, delete — and hermes'
//! own Python code reading back what we wrote.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use twilight_provision::{BotName, DotEnv, EnvKey, HermesCli, ProfileName};

/// Asks hermes' own code how it sees a profile: the LLM runtime it would use, the WeChat tool set, the MCP
/// servers with their `${VAR}`s filled in from the profile's `.env`, whether SOUL.md passes its
/// prompt-injection scan, and whether our skill loads.
const INSPECT_PROFILE: &str = r#"
import json, os
home = os.environ["HERMES_HOME"]
from hermes_cli.env_loader import load_hermes_dotenv
load_hermes_dotenv(hermes_home=home)
from hermes_cli.runtime_provider import resolve_runtime_provider, _get_model_config
from hermes_cli.config import load_config
from hermes_cli.tools_config import _get_platform_tools
from agent.prompt_builder import _scan_context_content
from tools.skills_tool import skill_view
from tools.mcp_tool import _load_mcp_config
rt = resolve_runtime_provider()
soul = open(os.path.join(home, "SOUL.md"), encoding="utf-8").read()
view = json.loads(skill_view("twilight-market-data"))
print(json.dumps({
    "provider": rt["provider"], "api_mode": rt["api_mode"], "base_url": rt["base_url"],
    "model": _get_model_config().get("default"),
    "weixin_tools": sorted(_get_platform_tools(load_config(), "weixin")),
    "soul": _scan_context_content(soul, "SOUL.md"),
    "skill_loaded": view.get("success"),
    "skill_content": view.get("content", ""),
    "mcp_servers": _load_mcp_config(),
    "token": os.environ.get("TWILIGHT_API_TOKEN"),
}, ensure_ascii=False))
"#;

/// Loads `<HERMES_HOME>/.env` exactly as the gateway does (hermes' sanitiser, then python-dotenv with
/// override and interpolation) and, separately, with plain python-dotenv; prints both.
const LOAD_ENV: &str = r#"
import json, os, sys
from dotenv import dotenv_values
home = os.environ["HERMES_HOME"]
keys = sys.argv[1:]
plain = dotenv_values(os.path.join(home, ".env"))
from hermes_cli.env_loader import load_hermes_dotenv
load_hermes_dotenv(hermes_home=home)
print(json.dumps({"hermes": {k: os.environ.get(k) for k in keys}, "dotenv": {k: plain.get(k) for k in keys}}))
"#;

fn python(cli: &HermesCli, hermes_home: &Path, script: &str, args: &[&str]) -> Value {
    let output = std::process::Command::new(cli.python())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("HERMES_HOME", hermes_home)
        .env("HERMES_DISABLE_LAZY_INSTALLS", "1")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn template_clone_plant_name_and_delete_with_real_hermes() {
    let Some(bin) = common::hermes_bin() else { return };
    let home = common::test_home();
    let cli = HermesCli::new(bin, home.path());
    let template = ProfileName::template();
    let user = ProfileName::for_user(uuid::Uuid::new_v4());

    // Installing twice is an update, not an error.
    let template_dir = cli.install_template(&common::template_dir(), &template).await.unwrap();
    cli.install_template(&common::template_dir(), &template).await.unwrap();
    assert!(template_dir.join("skills/twilight-market-data/SKILL.md").is_file());
    assert!(cli.profile_exists(&template).await.unwrap());

    assert!(!cli.profile_exists(&user).await.unwrap());
    let dir = cli.create_profile(&user, &template).await.unwrap();
    assert_eq!(cli.create_profile(&user, &template).await.unwrap(), dir, "a second create is a no-op");
    assert_eq!(dir, home.path().join("profiles").join(user.as_str()));
    assert!(dir.join("skills/twilight-market-data/SKILL.md").is_file());
    assert!(dir.join(".no-bundled-skills").is_file(), "the opt-out of bundled skills is carried over");
    assert_eq!(
        std::fs::read_to_string(dir.join("config.yaml")).unwrap(),
        std::fs::read_to_string(common::template_dir().join("config.yaml")).unwrap(),
        "hermes kept the template config verbatim (no schema migration)"
    );
    assert!(std::fs::read_to_string(dir.join("SOUL.md")).unwrap().contains("{{BOT_NAME}}"));

    cli.write_soul(&user, &template, &BotName::parse("小明").unwrap()).await.unwrap();
    let soul = std::fs::read_to_string(dir.join("SOUL.md")).unwrap();
    assert!(soul.contains("「小明」") && !soul.contains("{{BOT_NAME}}"));

    let raw = twilight_core::RawToken::generate();
    let token = raw.expose().to_owned();
    plant_env(&cli, &user, &token);
    assert_eq!(mode(&cli.env_file(&user)), 0o600);
    assert_eq!(mode(&template_dir.join(".env")), 0o600);
    assert!(!std::fs::read_to_string(template_dir.join(".env")).unwrap().contains(&token), "the template stays clean");

    let seen = python(&cli, &dir, INSPECT_PROFILE, &[]);
    assert_eq!(seen["provider"], "alibaba");
    assert_eq!(seen["api_mode"], "chat_completions");
    assert_eq!(seen["base_url"], "http://127.0.0.1:9/v1", "DASHSCOPE_BASE_URL decides the endpoint");
    assert_eq!(seen["model"], "qwen3.7-plus");
    let tools: Vec<&str> = seen["weixin_tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    // `kanban` is listed for every platform but only activates inside a kanban worker, which the
    // template's `kanban.dispatch_in_gateway: false` never spawns.
    assert_eq!(
        tools,
        ["clarify", "kanban", "memory", "session_search", "skills", "todo", "twilight"],
        "only tools that run no code and touch no files outside the profile"
    );
    let twilight = &seen["mcp_servers"]["twilight"];
    assert_eq!(twilight["url"], "http://127.0.0.1:8080/mcp", "{twilight}");
    assert_eq!(twilight["headers"]["Authorization"], format!("Bearer {token}"), "the user's own key, from the profile's .env");
    assert_eq!(seen["soul"].as_str().unwrap(), soul, "hermes' injection scan let SOUL.md through unchanged");
    assert_eq!(seen["skill_loaded"], true);
    assert!(seen["skill_content"].as_str().unwrap().contains("mcp__twilight__price"));
    assert_eq!(seen["token"], token.as_str());

    // Where gateways share one OS user, the template withholds session_search (it can open another
    // profile's state.db): a profile cloned from it then lacks the tool, as hermes itself resolves it.
    cli.withhold_tools(&template, &["session_search"]).await.unwrap();
    let shared = ProfileName::for_user(uuid::Uuid::new_v4());
    let shared_dir = cli.create_profile(&shared, &template).await.unwrap();
    plant_env(&cli, &shared, &token);
    let seen = python(&cli, &shared_dir, INSPECT_PROFILE, &[]);
    let tools: Vec<&str> = seen["weixin_tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tools, ["clarify", "kanban", "memory", "skills", "todo", "twilight"]);

    for profile in [&user, &user, &shared, &template] {
        cli.delete_profile(profile).await.unwrap();
    }
    assert!(!dir.exists());
}

/// What the provisioner plants in a profile's `.env`: our key and base URL, the relay as the LLM.
fn plant_env(cli: &HermesCli, profile: &ProfileName, token: &str) {
    let mut env = DotEnv::load(cli.env_file(profile)).unwrap();
    for (key, value) in [
        ("TWILIGHT_API_TOKEN", token),
        ("TWILIGHT_API_BASE", "http://127.0.0.1:8080"),
        ("DASHSCOPE_API_KEY", "sk-sandbox"),
        ("DASHSCOPE_BASE_URL", "http://127.0.0.1:9/v1"),
    ] {
        env.set(&EnvKey::parse(key).unwrap(), value).unwrap();
    }
    env.save().unwrap();
}

#[tokio::test]
async fn dotenv_values_read_back_exactly_through_hermes_loader() {
    let Some(bin) = common::hermes_bin() else { return };
    let home = common::test_home();
    let cli = HermesCli::new(bin, home.path());
    let values = [
        ("PLAIN", "sk-abc123_DEF.ghi/jkl:mno@p+q,r=s%"),
        ("SPACES", "  a value with  spaces  "),
        ("HASH", "before # after"),
        ("HASH_TIGHT", "a#b"),
        ("DOUBLE_QUOTES", r#"say "hi""#),
        ("SINGLE_QUOTES", "it's 'quoted'"),
        ("DOLLAR", "$HOME and $1 and $ and $(id)"),
        ("EQUALS", "a=b==c"),
        ("BACKSLASHES", r#"C:\path\n\t\\ \' \"x"#),
        ("BACKSLASH_BEFORE_QUOTE", r#"a\"b\\"c"#),
        ("MIXED", r#"p@ss "w'o#r=d" \ $x"#),
        ("UNICODE", "张老师 — “引号”"),
        ("TAB", "a\tb"),
        ("EMPTY", ""),
        ("EXPORT_LIKE", "export X=1"),
    ];
    let dir = home.path();
    std::fs::write(dir.join(".env"), "# hermes seeded comment\nUNRELATED=keep me\n").unwrap();
    let mut env = DotEnv::load(dir.join(".env")).unwrap();
    for (key, value) in values {
        env.set(&EnvKey::parse(key).unwrap(), value).unwrap();
    }
    env.save().unwrap();

    let mut keys: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
    keys.push("UNRELATED");
    let seen = python(&cli, dir, LOAD_ENV, &keys);
    for (key, value) in values.iter().chain([("UNRELATED", "keep me")].iter()) {
        assert_eq!(seen["dotenv"][key], *value, "python-dotenv read {key} differently");
        assert_eq!(seen["hermes"][key], *value, "hermes' loader read {key} differently");
    }
}
