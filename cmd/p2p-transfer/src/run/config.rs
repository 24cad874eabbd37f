//! `p2p-transfer config [COMMAND [FLAGS...]]`: the settings in effect and where each comes
//! from (a flag, an environment variable, the config file and its line, or the default).
//!
//! Without COMMAND, every section of the config file, each as the command it configures
//! would see it; with one, the settings of that very command line. The text is TOML: each
//! value that is set is a line that could be pasted into the file, with its origin in a
//! comment. `--json` prints a `config_file` object, then a `setting` object per setting.

use std::ffi::OsString;

use clap::{ArgAction, Command};
use serde::Serialize;

use crate::cli::ConfigArgs;
use crate::config::{ConfigFile, Loaded, Origin, SECTIONS, Section, Setting, Settings};

/// The command each section is shown for when no COMMAND is given.
const SHOWN_FOR: &[(&str, &str)] = &[
    ("", "peer"),
    ("index", "peer"),
    ("server", "server"),
    ("peer", "peer"),
    ("receive", "receive"),
];

/// Where the column of origins starts in the text output.
const ORIGIN_COLUMN: usize = 40;

/// The `--json` line that says which file was read.
#[derive(Serialize)]
struct FileLine<'a> {
    event: &'static str,
    path: Option<String>,
    /// Named by `--config` or `P2P_CONFIG` rather than found at the default place.
    explicit: bool,
    found: bool,
    /// The command whose settings follow (`null`: every section's).
    command: Option<&'a str>,
}

/// The `--json` line of one setting.
#[derive(Serialize)]
struct SettingLine {
    event: &'static str,
    section: &'static str,
    key: &'static str,
    /// A string; a list of strings for a list setting; `true`/`false` for a switch; `null`
    /// when not set.
    value: serde_json::Value,
    /// `flag`, `env`, `file`, `default` or `unset`.
    source: &'static str,
    /// The flag (`--workers`), the variable (`P2P_SERVER`) or the file's path.
    from: Option<String>,
    /// The file's line.
    line: Option<usize>,
    /// Why a value given is not used (a louder setting won over it).
    set_aside: Option<String>,
}

/// Runs `config`.
pub fn run(args: &ConfigArgs, loaded: &Loaded) -> anyhow::Result<()> {
    let file = loaded.file.as_ref();
    let wanted: Option<String> = args
        .command
        .first()
        .map(|c| c.to_string_lossy().into_owned());
    let header = FileLine {
        event: "config_file",
        path: loaded
            .location
            .path
            .as_ref()
            .map(|p| p.display().to_string()),
        explicit: loaded.location.explicit,
        found: file.is_some(),
        command: wanted.as_deref(),
    };
    if args.json {
        emit(&header);
    } else {
        print_header(&header, file);
    }
    let shown: Vec<(&Section, Vec<OsString>)> = match &wanted {
        None => SHOWN_FOR
            .iter()
            .map(|(name, command)| {
                let section = SECTIONS
                    .iter()
                    .find(|s| s.name == *name)
                    .expect("every shown section exists");
                (section, vec![OsString::from(*command)])
            })
            .collect(),
        Some(_) => SECTIONS
            .iter()
            .map(|section| (section, args.command.clone()))
            .collect(),
    };
    for (section, command) in shown {
        let mut argv = vec![OsString::from("p2p-transfer")];
        argv.extend(command);
        let (path, settings, leaf) =
            crate::config::explain(&argv, file).map_err(|err| match err {
                crate::config::LoadError::Usage(err) => {
                    anyhow::anyhow!("{}", first_line(&err.to_string()))
                }
                crate::config::LoadError::File(err) => err,
            })?;
        let leaf_name = path.last().map(String::as_str).unwrap_or_default();
        if !section.applies_to(leaf_name, &leaf) {
            continue;
        }
        show_section(section, &settings, leaf_name, &leaf, args.json);
    }
    Ok(())
}

/// clap's error without its usage and help lines.
fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or(text);
    line.strip_prefix("error: ").unwrap_or(line)
}

/// `# config file: PATH (...)`.
fn print_header(header: &FileLine<'_>, file: Option<&ConfigFile>) {
    let state = match (&header.path, file, header.explicit) {
        (None, _, _) => "# no config file: this user has no home folder".to_owned(),
        (Some(path), Some(_), _) => format!("# config file: {path}"),
        (Some(path), None, _) => format!("# config file: {path} (not there: none is used)"),
    };
    println!("{state}");
    if let Some(command) = header.command {
        println!("# settings of `p2p-transfer {command} ...`");
    }
}

/// One section's settings that reach the command `name` (`leaf`), in the order its keys are
/// listed.
fn show_section(section: &Section, settings: &Settings, name: &str, leaf: &Command, json: bool) {
    if !json {
        println!();
        if !section.name.is_empty() {
            println!("[{}]", section.name);
        }
    }
    for key in section.keys {
        if !section.reaches(key, name, leaf) {
            continue;
        }
        let Some(arg) = leaf.get_arguments().find(|a| a.get_long() == Some(key)) else {
            continue;
        };
        let Some(setting) = settings.get(arg.get_id().as_str()) else {
            continue;
        };
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let list = matches!(arg.get_action(), ArgAction::Append);
        if json {
            emit(&setting_line(section.name, key, setting, switch, list));
        } else {
            println!("{}", text_line(key, setting, switch, list));
        }
    }
}

/// A setting as a TOML line with its origin in a comment; commented out when not set or
/// set aside.
fn text_line(key: &str, setting: &Setting, switch: bool, list: bool) -> String {
    let origin = match &setting.origin {
        Origin::Flag(flag) => format!("flag {flag}"),
        Origin::Env(var) => format!("env {var}"),
        Origin::File { path, line } => format!("file {}:{line}", path.display()),
        Origin::Default => "default".to_owned(),
        Origin::Unset => "not set".to_owned(),
    };
    let value = toml_value(&setting.values, switch, list);
    let (assignment, origin) = match (&value, &setting.set_aside) {
        (None, _) => (format!("# {key} ="), origin),
        (Some(value), Some(why)) => (
            format!("# {key} = {value}"),
            format!("{origin}, set aside: {why}"),
        ),
        (Some(value), None) => (format!("{key} = {value}"), origin),
    };
    let pad = ORIGIN_COLUMN
        .saturating_sub(assignment.chars().count())
        .max(1);
    format!("{assignment}{:pad$}# {origin}", "")
}

/// The values as TOML: a number or a switch bare, a string quoted, a list as an array.
fn toml_value(values: &[String], switch: bool, list: bool) -> Option<String> {
    let one = |v: &String| {
        if switch || v.parse::<i64>().is_ok() {
            v.clone()
        } else {
            serde_json::Value::String(v.clone()).to_string()
        }
    };
    match values {
        [] => None,
        [v] if !list => Some(one(v)),
        many => Some(format!(
            "[{}]",
            many.iter().map(one).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn setting_line(
    section: &'static str,
    key: &'static str,
    setting: &Setting,
    switch: bool,
    list: bool,
) -> SettingLine {
    let value = match setting.values.as_slice() {
        _ if list => serde_json::json!(setting.values),
        [] => serde_json::Value::Null,
        [v] if switch => serde_json::Value::Bool(v == "true"),
        [v] => serde_json::Value::String(v.clone()),
        _ => serde_json::json!(setting.values),
    };
    let (source, from, line) = match &setting.origin {
        Origin::Flag(flag) => ("flag", Some(flag.clone()), None),
        Origin::Env(var) => ("env", Some(var.clone()), None),
        Origin::File { path, line } => ("file", Some(path.display().to_string()), Some(*line)),
        Origin::Default => ("default", None, None),
        Origin::Unset => ("unset", None, None),
    };
    SettingLine {
        event: "setting",
        section,
        key,
        value,
        source,
        from,
        line,
        set_aside: setting.set_aside.clone(),
    }
}

/// One JSON object on a line of stdout.
fn emit(line: &impl Serialize) {
    let text = serde_json::to_string(line).expect("plain structs serialize");
    println!("{text}");
}
