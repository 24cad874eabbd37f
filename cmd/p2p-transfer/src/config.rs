//! The config file: `$XDG_CONFIG_HOME/p2p-transfer/config.toml` (`~/.config/...` by
//! default), or the file `--config PATH` or `P2P_CONFIG` names.
//!
//! # How a value is chosen
//! Flags beat the environment, which beats the file, which beats the built-in defaults. The
//! file's values become the flags' defaults before the command line is parsed, so clap itself
//! applies that order (a flag or an environment variable is an explicit value, a default is
//! not) and checks each value with the flag's own parser. What stays for this module: finding
//! and reading the file, naming the file, line and key of anything wrong in it, and the one
//! rules clap can't express, such as "`--auto-discover` or a server, whichever was said louder"
//! ([`settle`]).
//!
//! # The file
//! Keys are the flags' long names, in a section per command; `identity-dir` at the top and
//! `[index]` apply to every command that takes them (the same commands an environment
//! variable such as `P2P_SERVER` reaches: `doctor` too, so it checks the index the others
//! use). `[peer]`'s listen address, output folder and advertised address are `doctor`'s too,
//! so it checks the port and folder the peer uses. Only long-lived settings are taken: what a
//! run does (`--register`, `--download`, `--json`, `-i`) stays on the command line. An unknown
//! section or key is an error naming it, the file and the line. A relative path is relative
//! to the file's folder; `~/` is the home folder. A list flag's value is an array, and a flag
//! given on the command line replaces the file's list. A missing default file is fine; a
//! missing file named by `--config` or `P2P_CONFIG` is an error. A command that takes no
//! setting (`completions`, `man`) doesn't read the file at all, so a broken one can't stop it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::parser::{ArgMatches, ValueSource};
use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches};
use toml::de::{DeTable, DeValue};

use crate::cli::{Cli, Command as Sub};

/// The variable that names the config file (as `--config` does).
pub const CONFIG_ENV: &str = "P2P_CONFIG";

/// The file's name inside `$XDG_CONFIG_HOME/p2p-transfer/`.
const FILE_NAME: &str = "config.toml";

/// The folder under `$XDG_CONFIG_HOME`.
const APP_DIR: &str = "p2p-transfer";

/// The largest config file read: a settings file is a few hundred bytes, so anything this
/// big is the wrong file.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A part of the file: the top level (`name` empty) or a `[name]` table.
pub struct Section {
    /// The table's name, empty for the top level.
    pub name: &'static str,
    /// The keys it takes: long flag names.
    pub keys: &'static [&'static str],
    /// Which commands it applies to.
    applies: Applies,
    /// Keys that also reach another command, as that command's flag of the same name:
    /// (command, keys).
    also: &'static [(&'static str, &'static [&'static str])],
}

/// Which commands a section's keys reach.
enum Applies {
    /// These (leaf) commands.
    Commands(&'static [&'static str]),
    /// Every command that has a flag of this long name.
    HavingFlag(&'static str),
    /// Every command that has a flag this environment variable stands for (as the variable
    /// itself reaches them all).
    HavingEnv(&'static str),
}

/// The commands that use several index servers at once: elsewhere `[index] server` (and
/// `--server`) names one.
const SEVERAL_SERVERS: &[&str] = &["search", "peer"];

/// The commands that use one index and weigh `--dns-sd-domain` against `--server` and
/// `--auto-discover` (the loudest wins); the others take the indexes of all three (`search`
/// asks them all, `doctor` checks them all, and `peer` registers with them).
const ONE_INDEX: &[&str] = &["send", "receive"];

/// Commands that read the config file although no section applies to them.
const READ_THE_FILE: &[&str] = &["config"];

/// Every section of the file, in the order `p2p-transfer config` prints them.
pub const SECTIONS: &[Section] = &[
    Section {
        name: "",
        keys: &["identity-dir"],
        applies: Applies::HavingFlag("identity-dir"),
        also: &[],
    },
    Section {
        name: "index",
        keys: &[
            "server",
            "server-id",
            "auto-discover",
            "discover-timeout",
            "server-name",
            "dns-sd-domain",
            "dns-sd-server",
        ],
        // `peer`, `search`, `send`, `receive` and `doctor`.
        applies: Applies::HavingEnv("P2P_SERVER"),
        also: &[],
    },
    Section {
        name: "server",
        keys: &[
            "addr",
            "allow-peers",
            "heartbeat-interval",
            "heartbeat-timeout",
            "max-connections",
            "first-request-timeout",
            "max-connections-per-ip",
            "max-peers-per-ip",
            "max-index-mib",
            "max-index-mib-per-ip",
            "max-index-mib-per-peer",
            "max-folders-per-peer",
            "max-folder-files-per-peer",
            "register-rate-per-ip",
            "search-rate-per-ip",
            "no-mdns",
            "no-probe",
            "mdns-interface",
            "web",
        ],
        applies: Applies::Commands(&["server"]),
        also: &[],
    },
    Section {
        name: "peer",
        keys: &[
            "addr",
            "allow-peers",
            "advertise-addr",
            "from",
            "share-dir",
            "mdns-interface",
            "no-known-indexes",
            "dht",
            "dht-listen",
            "dht-bootstrap",
            "out",
            "workers",
            "stall-timeout",
            "request-timeout",
            "web",
            "upload-dir",
            "max-upload-mib",
        ],
        applies: Applies::Commands(&["peer"]),
        // `doctor` checks the port the peer listens on, the folder it writes to, and the
        // address it advertises.
        also: &[("doctor", &["addr", "out", "advertise-addr"])],
    },
    Section {
        name: "receive",
        keys: &["out", "workers"],
        applies: Applies::Commands(&["receive"]),
        also: &[],
    },
];

/// Keys whose values are paths: relative ones are taken from the file's folder.
const PATH_KEYS: &[&str] = &[
    "identity-dir",
    "allow-peers",
    "share-dir",
    "out",
    "upload-dir",
];

/// What went wrong before a command could run: the command line (clap's own error, printed
/// with its usage) or the config file (one line naming it).
#[derive(Debug)]
pub enum LoadError {
    /// The command line is wrong.
    Usage(clap::Error),
    /// The config file can't be used (the error names it).
    File(anyhow::Error),
}

impl From<clap::Error> for LoadError {
    fn from(err: clap::Error) -> Self {
        LoadError::Usage(err)
    }
}

/// A config file, read and checked.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its values, in file order.
    entries: Vec<Entry>,
}

/// One `key = value` of the file.
#[derive(Debug, Clone)]
struct Entry {
    section: &'static str,
    key: &'static str,
    value: Value,
    line: usize,
    column: usize,
}

/// A value, as the strings a flag would have been given.
#[derive(Debug, Clone)]
enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// A string or a number.
    One(String),
    /// An array.
    Many(Vec<String>),
}

/// Where the config file is looked for, and whether it must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The path, if there is one (no home folder: none).
    pub path: Option<PathBuf>,
    /// Named by `--config` or `P2P_CONFIG`, rather than the default place.
    pub explicit: bool,
}

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line (its flag).
    Flag(String),
    /// An environment variable.
    Env(String),
    /// The config file, at this line.
    File { path: PathBuf, line: usize },
    /// The built-in default.
    Default,
    /// Not set at all.
    Unset,
}

/// Parsed flags, and what is needed to say where each value came from.
pub struct Loaded {
    /// The flags, with the file's values filled in and [`settle`]d.
    pub cli: Cli,
    /// The file that was read, if any.
    pub file: Option<ConfigFile>,
    /// Where the file was looked for.
    pub location: Location,
    /// Where each of the command's values came from (`doctor` names its index's origin).
    pub settings: Settings,
}

/// Parses the process's command line with the config file's values as defaults (for a
/// command that reads it).
pub fn load(argv: Vec<OsString>) -> Result<Loaded, LoadError> {
    let (location, command) = first_look(&argv);
    let file = if reads_the_file(&Cli::command(), &command) {
        read(&location)?
    } else {
        None
    };
    let (cli, settings) = parse_settled(&argv, file.as_ref())?;
    Ok(Loaded {
        cli,
        file,
        location,
        settings,
    })
}

/// A forgiving first parse (an error on the line is reported by the real one): where the
/// config file is, and the command's path of names (empty when none can be made out). The
/// file is the one `--config` names, else `P2P_CONFIG`, else the default place.
fn first_look(argv: &[OsString]) -> (Location, Vec<String>) {
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .ok();
    let mut command = Vec::new();
    let mut at = matches.as_ref();
    while let Some((name, sub)) = at.and_then(ArgMatches::subcommand) {
        command.push(name.to_owned());
        at = Some(sub);
    }
    // `config peer --config PATH` shows what `peer --config PATH` would run with.
    let shown = match (command.as_slice(), &matches) {
        ([only], Some(matches)) if only == "config" => matches
            .subcommand_matches("config")
            .and_then(|m| m.get_raw("command"))
            .and_then(|line| {
                let argv: Vec<OsString> = std::iter::once(OsString::from("p2p-transfer"))
                    .chain(line.map(OsString::from))
                    .collect();
                Cli::command()
                    .ignore_errors(true)
                    .try_get_matches_from(argv)
                    .ok()
            }),
        _ => None,
    };
    let given = shown
        .as_ref()
        .and_then(config_arg)
        .or_else(|| matches.as_ref().and_then(config_arg));
    let location = match given {
        Some(path) => Location {
            path: Some(path),
            explicit: true,
        },
        None => Location {
            path: default_path(),
            explicit: false,
        },
    };
    (location, command)
}

/// `--config` (or its variable) wherever it was given on the line.
fn config_arg(matches: &ArgMatches) -> Option<PathBuf> {
    if let Ok(Some(path)) = matches.try_get_one::<PathBuf>("config") {
        return Some(path.clone());
    }
    matches.subcommand().and_then(|(_, sub)| config_arg(sub))
}

/// `$XDG_CONFIG_HOME/p2p-transfer/config.toml`, or `~/.config/...`.
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join(APP_DIR).join(FILE_NAME))
}

/// Reads and checks the file at `location` (none there at the default place: `None`).
pub fn read(location: &Location) -> Result<Option<ConfigFile>, LoadError> {
    let Some(path) = &location.path else {
        return Ok(None);
    };
    let cannot = |err: std::io::Error| {
        LoadError::File(
            anyhow::Error::new(err)
                .context(format!("cannot read the config file {}", path.display())),
        )
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !location.explicit => {
            return Ok(None);
        }
        Err(err) => return Err(cannot(err)),
    };
    if !metadata.is_file() || metadata.len() > MAX_FILE_BYTES {
        return Err(LoadError::File(anyhow::anyhow!(
            "{} is not a config file (a TOML file of at most {} KiB)",
            path.display(),
            MAX_FILE_BYTES >> 10
        )));
    }
    let text = std::fs::read_to_string(path).map_err(cannot)?;
    parse_file(path, &text)
        .map(Some)
        .map_err(|message| LoadError::File(anyhow::anyhow!(message)))
}

/// Checks the file's sections and keys and takes its values.
pub fn parse_file(path: &Path, text: &str) -> Result<ConfigFile, String> {
    let place = Place { path, text };
    let doc = DeTable::parse(text).map_err(|err| match err.span() {
        Some(span) => format!("{}: {}", place.at(span.start), err.message().trim_end()),
        None => format!("{}: {}", path.display(), err.message().trim_end()),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut entries = Vec::new();
    for (key, value) in doc.get_ref() {
        let DeValue::Table(table) = value.get_ref() else {
            entries.push(entry(&SECTIONS[0], key, value, base, &place)?);
            continue;
        };
        let name = key.get_ref().as_ref();
        let Some(section) = SECTIONS
            .iter()
            .find(|s| !s.name.is_empty() && s.name == name)
        else {
            let known: Vec<String> = SECTIONS
                .iter()
                .filter(|s| !s.name.is_empty())
                .map(|s| format!("[{}]", s.name))
                .collect();
            return Err(format!(
                "{}: unknown section [{}] (known: {})",
                place.at(key.span().start),
                p2p_protocol::printable(name),
                known.join(", ")
            ));
        };
        for (key, value) in table {
            entries.push(entry(section, key, value, base, &place)?);
        }
    }
    Ok(ConfigFile {
        path: path.to_owned(),
        entries,
    })
}

/// The file being read, to name a place in it.
struct Place<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Place<'_> {
    /// `PATH:LINE:COLUMN` of a byte offset.
    fn at(&self, offset: usize) -> String {
        let (line, column) = line_column(self.text, offset);
        format!("{}:{line}:{column}", self.path.display())
    }
}

/// One `key = value` of `section`, checked against the keys it takes.
fn entry(
    section: &'static Section,
    key: &toml::Spanned<std::borrow::Cow<'_, str>>,
    value: &toml::Spanned<DeValue<'_>>,
    base: &Path,
    place: &Place<'_>,
) -> Result<Entry, String> {
    let name = key.get_ref().as_ref();
    let Some(known) = section.keys.iter().find(|k| **k == name) else {
        return Err(format!(
            "{}: unknown key \"{}\" {} (known: {})",
            place.at(key.span().start),
            p2p_protocol::printable(name),
            section.describe(),
            section.keys.join(", ")
        ));
    };
    let wrong = |what: &str| {
        format!(
            "{}: {known} {}: {what}",
            place.at(value.span().start),
            section.describe()
        )
    };
    let scalar = |value: &DeValue<'_>| -> Result<String, String> {
        match value {
            DeValue::String(s) if PATH_KEYS.contains(known) => {
                Ok(resolve_path(base, s).display().to_string())
            }
            DeValue::String(s) => Ok(s.to_string()),
            DeValue::Integer(n) => n
                .as_str()
                .replace('_', "")
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|_| wrong("write the number in decimal")),
            DeValue::Float(f) => Ok(f.as_str().to_owned()),
            other => Err(wrong(&format!(
                "expected a string or a number, not {}",
                other.type_str()
            ))),
        }
    };
    let parsed = match value.get_ref() {
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Array(items) => Value::Many(
            items
                .iter()
                .map(|item| scalar(item.get_ref()))
                .collect::<Result<_, _>>()?,
        ),
        other => Value::One(scalar(other)?),
    };
    let (line, column) = line_column(place.text, value.span().start);
    Ok(Entry {
        section: section.name,
        key: known,
        value: parsed,
        line,
        column,
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// A path from the file: `~/x` under the home folder, a relative one under the file's folder.
fn resolve_path(base: &Path, text: &str) -> PathBuf {
    if let Some(rest) = text.strip_prefix("~/")
        && let Some(home) = dirs::home_dir()
    {
        return home.join(rest);
    }
    if text == "~"
        && let Some(home) = dirs::home_dir()
    {
        return home;
    }
    base.join(text)
}

impl Section {
    /// `at the top level` or `in [peer]`.
    fn describe(&self) -> String {
        if self.name.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in [{}]", self.name)
        }
    }

    /// Whether the section's `key` reaches the command `name` (`leaf`, already looked up): it
    /// applies there, and `leaf` has a flag of that name.
    pub fn reaches(&self, key: &str, name: &str, leaf: &Command) -> bool {
        let whole = match self.applies {
            Applies::Commands(names) => names.contains(&name),
            Applies::HavingFlag(flag) => leaf.get_arguments().any(|a| a.get_long() == Some(flag)),
            Applies::HavingEnv(var) => leaf
                .get_arguments()
                .any(|a| a.get_env().is_some_and(|e| e == var)),
        };
        let also = || {
            self.also
                .iter()
                .any(|(command, keys)| *command == name && keys.contains(&key))
        };
        (whole || also()) && leaf.get_arguments().any(|a| a.get_long() == Some(key))
    }

    /// Whether any of this section's keys reaches the command `name` (`leaf`).
    pub fn applies_to(&self, name: &str, leaf: &Command) -> bool {
        self.keys.iter().any(|key| self.reaches(key, name, leaf))
    }
}

/// Whether the command at `path` reads the config file: a setting reaches it (or it is
/// `config`). Those that don't (`completions`, `man`) run whatever state the file is in.
fn reads_the_file(cmd: &Command, path: &[String]) -> bool {
    let (Some(leaf), Some(name)) = (find_leaf(cmd, path), path.last()) else {
        // No command (or clap's own `help`): nothing to read it for.
        return false;
    };
    READ_THE_FILE.contains(&name.as_str()) || SECTIONS.iter().any(|s| s.applies_to(name, leaf))
}

/// The leaf subcommands: their path of names (`["manifest", "create"]`).
fn leaves(cmd: &Command) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for sub in cmd.get_subcommands() {
        let name = sub.get_name().to_owned();
        if sub.has_subcommands() {
            for mut path in leaves(sub) {
                path.insert(0, name.clone());
                found.push(path);
            }
        } else {
            found.push(vec![name]);
        }
    }
    found
}

/// `f` applied to the subcommand at `path` of `cmd`.
fn mut_leaf(cmd: Command, path: &[String], f: &mut dyn FnMut(Command) -> Command) -> Command {
    match path {
        [] => f(cmd),
        [first, rest @ ..] => cmd.mut_subcommand(first, |sub| mut_leaf(sub, rest, f)),
    }
}

/// The subcommand at `path`.
fn find_leaf<'a>(cmd: &'a Command, path: &[String]) -> Option<&'a Command> {
    match path {
        [] => Some(cmd),
        [first, rest @ ..] => cmd
            .find_subcommand(first)
            .and_then(|sub| find_leaf(sub, rest)),
    }
}

/// Which arguments (by id) of one command the file set, and at which line.
type FileSet = HashMap<String, usize>;

/// One argument of the command run: its value as given and where it came from.
#[derive(Debug, Clone)]
pub struct Setting {
    /// Where the value came from.
    pub origin: Origin,
    /// The value as given (each of a list's), before parsing.
    pub values: Vec<String>,
    /// Why a value given is not used (a louder setting won over it).
    pub set_aside: Option<String>,
}

/// The command line's settings, by argument id.
pub type Settings = BTreeMap<String, Setting>;

/// The file's values for each leaf command: which arguments they set, or the first value
/// that command can't take (reported only when that command runs: a list of servers is fine
/// for `search`, not for `peer`).
type FileSets = HashMap<Vec<String>, Result<FileSet, LoadError>>;

/// The command with the file's values as the defaults of the flags they name, and which
/// arguments of each leaf command they set. With `relaxed`, positional arguments are optional
/// (for `config`, which shows a command's settings without running it).
fn command_with(file: Option<&ConfigFile>, relaxed: bool) -> (Command, FileSets) {
    let mut cmd = Cli::command();
    let mut sets = FileSets::new();
    for path in leaves(&cmd) {
        let leaf = find_leaf(&cmd, &path).expect("a leaf found above").clone();
        let leaf_name = path.last().map(String::as_str).unwrap_or_default();
        let mut defaults: Vec<(String, Vec<String>)> = Vec::new();
        let mut set = FileSet::new();
        let mut failed = None;
        if let Some(file) = file {
            for entry in &file.entries {
                let section = SECTIONS
                    .iter()
                    .find(|s| s.name == entry.section)
                    .expect("entries come from SECTIONS");
                if !section.reaches(entry.key, leaf_name, &leaf) {
                    continue;
                }
                let Some(arg) = leaf
                    .get_arguments()
                    .find(|a| a.get_long() == Some(entry.key))
                else {
                    continue;
                };
                match values_for(arg, entry, &path, &file.path) {
                    Ok(Some(values)) => {
                        let id = arg.get_id().to_string();
                        set.insert(id.clone(), entry.line);
                        defaults.push((id, values));
                    }
                    Ok(None) => {}
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
        }
        sets.insert(path.clone(), failed.map_or(Ok(set), Err));
        if defaults.is_empty() && !relaxed {
            continue;
        }
        cmd = mut_leaf(cmd, &path, &mut |mut sub: Command| {
            for (id, values) in &defaults {
                let values = values.clone();
                sub = sub.mut_arg(id, |arg| arg.default_values(values));
            }
            if relaxed {
                sub = sub.mut_args(|arg| {
                    if arg.is_positional() {
                        arg.required(false)
                    } else {
                        arg
                    }
                });
            }
            sub
        });
    }
    (cmd, sets)
}

/// The strings a file entry gives `arg`, checked with the flag's own parser (`None`: leave
/// the flag unset, as `web = false`).
fn values_for(
    arg: &Arg,
    entry: &Entry,
    leaf: &[String],
    path: &Path,
) -> Result<Option<Vec<String>>, LoadError> {
    let wrong = |what: String| {
        let section = SECTIONS
            .iter()
            .find(|s| s.name == entry.section)
            .map(Section::describe)
            .unwrap_or_default();
        LoadError::File(anyhow::anyhow!(
            "{}:{}:{}: {} {section}: {what}",
            path.display(),
            entry.line,
            entry.column,
            entry.key,
        ))
    };
    let is_flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    let leaf_name = leaf.last().map(String::as_str).unwrap_or_default();
    // `--server` is repeatable for every command that takes `IndexArgs`, but only `search`
    // uses more than one (`settle` says the same of the flags).
    let many = matches!(arg.get_action(), ArgAction::Append)
        && (arg.get_id() != "servers" || SEVERAL_SERVERS.contains(&leaf_name));
    let takes_bare = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
    let values = match &entry.value {
        Value::Bool(b) if is_flag => return Ok(Some(vec![b.to_string()])),
        _ if is_flag => return Err(wrong("expected true or false".to_owned())),
        // `web = true`: what the flag means given without an address; `false`: off.
        Value::Bool(true) if takes_bare => match bare_value(arg) {
            Some(values) => values,
            None => return Err(wrong("expected a value, not true".to_owned())),
        },
        Value::Bool(false) if takes_bare => return Ok(None),
        Value::Bool(_) => return Err(wrong("expected a value, not true or false".to_owned())),
        Value::One(one) => vec![one.clone()],
        Value::Many(list) if many => list.clone(),
        Value::Many(list) => match list.as_slice() {
            [one] => vec![one.clone()],
            _ if entry.key == "server" => {
                return Err(wrong(format!(
                    "`p2p-transfer {}` uses one index server, not a list (only `search` and \
                     `peer` use several)",
                    leaf.join(" ")
                )));
            }
            _ => {
                return Err(wrong(format!(
                    "`p2p-transfer {}` takes one value here, not a list",
                    leaf.join(" ")
                )));
            }
        },
    };
    for value in &values {
        check_value(arg, value).map_err(wrong)?;
    }
    Ok(Some(values))
}

/// What `arg` means given bare (`--web` alone: its default address).
fn bare_value(arg: &Arg) -> Option<Vec<String>> {
    let long = arg.get_long()?;
    let id = arg.get_id().as_str();
    let matches = Command::new("config")
        .no_binary_name(true)
        .arg(arg.clone().env(None::<&str>).required(false))
        .try_get_matches_from([format!("--{long}")])
        .ok()?;
    let values: Vec<String> = matches
        .get_raw(id)?
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    (!values.is_empty()).then_some(values)
}

/// Runs `value` through `arg`'s parser, as if it had been given on the command line.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let probe = Arg::new("value")
        .long("value")
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Set);
    let result = Command::new("config")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([format!("--value={value}")]);
    match result {
        Ok(_) => Ok(()),
        Err(err) => {
            let cause = std::error::Error::source(&err)
                .map(ToString::to_string)
                .unwrap_or_else(|| err.kind().to_string());
            Err(format!(
                "invalid value \"{}\": {cause}",
                p2p_protocol::printable(value)
            ))
        }
    }
}

/// [`parse_settled`]'s flags alone.
#[cfg(test)]
pub fn parse(argv: &[OsString], file: Option<&ConfigFile>) -> Result<Cli, LoadError> {
    parse_settled(argv, file).map(|(cli, _)| cli)
}

/// Parses `argv` with the file's values as defaults, then [`settle`]s what clap can't; also
/// says where each of the command's values came from.
fn parse_settled(
    argv: &[OsString],
    file: Option<&ConfigFile>,
) -> Result<(Cli, Settings), LoadError> {
    let (cmd, mut sets) = command_with(file, false);
    let mut matches = cmd.clone().try_get_matches_from(argv)?;
    let (path, mut settings, _) = settings_of(&cmd, &matches, &mut sets, file)?;
    let settled = settle(&path, &mut settings, &cmd)?;
    let mut cli = Cli::from_arg_matches_mut(&mut matches)?;
    settled.apply(&mut cli);
    Ok((cli, settings))
}

/// What `argv` would run with, without running it (its positional arguments may be left
/// out): the command's path (`["peer"]`), its arguments, and where each value came from.
pub fn explain(
    argv: &[OsString],
    file: Option<&ConfigFile>,
) -> Result<(Vec<String>, Settings, Command), LoadError> {
    let (cmd, mut sets) = command_with(file, true);
    let matches = cmd.clone().try_get_matches_from(argv)?;
    let (path, mut settings, leaf) = settings_of(&cmd, &matches, &mut sets, file)?;
    settle(&path, &mut settings, &cmd)?;
    Ok((path, settings, leaf))
}

/// The command run (its path and definition) and where each of its values came from; the
/// file's first value it can't take, if any.
fn settings_of(
    cmd: &Command,
    matches: &ArgMatches,
    sets: &mut FileSets,
    file: Option<&ConfigFile>,
) -> Result<(Vec<String>, Settings, Command), LoadError> {
    let mut path = Vec::new();
    let mut leaf_matches = matches;
    let mut leaf_cmd = cmd;
    while let Some((name, sub)) = leaf_matches.subcommand() {
        path.push(name.to_owned());
        leaf_matches = sub;
        leaf_cmd = leaf_cmd.find_subcommand(name).expect("clap matched it");
    }
    let from_file = sets.remove(&path).unwrap_or_else(|| Ok(FileSet::new()))?;
    let mut settings = Settings::new();
    for arg in leaf_cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let origin = match leaf_matches.value_source(id) {
            Some(ValueSource::CommandLine) => Origin::Flag(match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => id.to_owned(),
            }),
            Some(ValueSource::EnvVariable) => Origin::Env(
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            Some(_) => match (from_file.get(id), file) {
                (Some(line), Some(file)) => Origin::File {
                    path: file.path.clone(),
                    line: *line,
                },
                _ => Origin::Default,
            },
            None => Origin::Unset,
        };
        // A switch as it was understood (`P2P_NO_MDNS=yes` is `true`), the rest as given.
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let values = match leaf_matches.try_get_one::<bool>(id) {
            Ok(Some(on)) if switch => vec![on.to_string()],
            _ => leaf_matches
                .get_raw(id)
                .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default(),
        };
        settings.insert(
            id.to_owned(),
            Setting {
                origin,
                values,
                set_aside: None,
            },
        );
    }
    Ok((path, settings, leaf_cmd.clone()))
}

impl Origin {
    /// How loudly the value was said: a flag beats the environment, which beats the file,
    /// which beats a default.
    fn rank(&self) -> u8 {
        match self {
            Origin::Flag(_) => 3,
            Origin::Env(_) => 2,
            Origin::File { .. } => 1,
            Origin::Default | Origin::Unset => 0,
        }
    }
}

/// What [`settle`] decided to leave out of the parsed flags.
#[derive(Debug, Default)]
struct Settled {
    drop_server: bool,
    drop_auto_discover: bool,
    drop_server_name: bool,
    drop_mdns_interfaces: bool,
    drop_server_id: bool,
    drop_dns_sd_domain: bool,
    drop_dns_sd_server: bool,
}

/// The rules clap can't apply to values it doesn't count as given (the file's):
/// - `--auto-discover` and a server: the one said louder wins (a flag `--auto-discover`
///   beats `P2P_SERVER` or the file's server, a flag `--server` beats the file's
///   `auto-discover = true`); said equally loud, they conflict.
/// - The file's `server-id` goes with the file's index: set aside when the index comes from
///   a flag or the environment.
/// - `--server-name` (and peer's `--mdns-interface`) need `--auto-discover`: an error when
///   given as flags, set aside when they come from the environment or the file.
/// - Only `search` asks several index servers: elsewhere, `--server` twice is an error (a
///   list in the file is refused when it is read, [`values_for`]).
/// - `--dns-sd-domain` adds the indexes published in DNS, except for the commands that use
///   one index ([`ONE_INDEX`]): there it is weighed against the server or `--auto-discover`
///   as those two are weighed against each other. `--dns-sd-server` needs `--dns-sd-domain`,
///   as `--server-name` needs `--auto-discover`.
fn settle(path: &[String], settings: &mut Settings, cmd: &Command) -> Result<Settled, LoadError> {
    let mut settled = Settled::default();
    let leaf = path.last().map(String::as_str).unwrap_or_default();
    let server_id = if settings.contains_key("servers") {
        "servers"
    } else {
        "server"
    };
    if let Some(servers) = settings.get("servers")
        && servers.values.len() > 1
        && !SEVERAL_SERVERS.contains(&leaf)
    {
        return Err(LoadError::Usage(cmd.clone().error(
            ErrorKind::TooManyValues,
            format!(
                "`p2p-transfer {}` uses one index server: give --server once (only `search` \
                 and `peer` use several)",
                path.join(" ")
            ),
        )));
    }
    let given = |setting: Option<&Setting>, set: bool| match setting {
        Some(setting) if set => setting.origin.rank(),
        _ => 0,
    };
    // Commands without `--auto-discover` (`doctor`) have no switch to weigh.
    let has_auto = settings.contains_key("auto_discover");
    let mut auto_on = settings
        .get("auto_discover")
        .is_some_and(|auto| auto.values.iter().any(|v| v == "true"));
    let auto_rank = given(settings.get("auto_discover"), auto_on);
    let server = settings.get(server_id);
    let server_rank = given(server, server.is_some_and(|s| !s.values.is_empty()));
    if server_rank > 0 && auto_rank > 0 {
        if server_rank == auto_rank {
            if let Origin::File { path, line } = &settings["auto_discover"].origin {
                return Err(LoadError::File(anyhow::anyhow!(
                    "{}:{line}: auto-discover = true and a server are both set: keep one",
                    path.display()
                )));
            }
            return Err(LoadError::Usage(cmd.clone().error(
                ErrorKind::ArgumentConflict,
                "the argument '--auto-discover' cannot be used with '--server <HOST[:PORT]>'",
            )));
        }
        if auto_rank > server_rank {
            settled.drop_server = true;
            set_aside(settings, server_id, "--auto-discover is given");
        } else {
            settled.drop_auto_discover = true;
            auto_on = false;
            set_aside(settings, "auto_discover", "a server is given");
        }
    }
    // The file's `server-id` pins the file's index: when the index comes from a louder source
    // (a flag or the environment), that id would refuse it, so it is set aside.
    let mut index_rank = if auto_on {
        auto_rank
    } else if settled.drop_server {
        0
    } else {
        server_rank
    };
    index_rank = settle_dns_sd(leaf, settings, cmd, &mut settled, index_rank)?;
    if index_rank > 1
        && settings
            .get("server_id")
            .is_some_and(|id| matches!(id.origin, Origin::File { .. }) && !id.values.is_empty())
    {
        settled.drop_server_id = true;
        set_aside(
            settings,
            "server_id",
            "the index is given by a flag or the environment",
        );
    }
    if !has_auto || auto_on {
        return Ok(settled);
    }
    for (id, flag) in [
        ("server_name", "--server-name"),
        ("mdns_interfaces", "--mdns-interface"),
    ] {
        let Some(setting) = settings.get(id) else {
            continue;
        };
        if setting.values.is_empty() {
            continue;
        }
        if matches!(setting.origin, Origin::Flag(_)) {
            return Err(LoadError::Usage(cmd.clone().error(
                ErrorKind::MissingRequiredArgument,
                format!("{flag} needs --auto-discover"),
            )));
        }
        match id {
            "server_name" => settled.drop_server_name = true,
            _ => settled.drop_mdns_interfaces = true,
        }
        set_aside(settings, id, "no --auto-discover");
    }
    Ok(settled)
}

/// [`settle`]'s rules for `--dns-sd-domain` and `--dns-sd-server`, given how loudly the
/// other index (a server or `--auto-discover`) was said; returns how loudly the index used
/// was said.
fn settle_dns_sd(
    leaf: &str,
    settings: &mut Settings,
    cmd: &Command,
    settled: &mut Settled,
    other_rank: u8,
) -> Result<u8, LoadError> {
    let rank_of = |id: &str| {
        settings
            .get(id)
            .filter(|s| !s.values.is_empty())
            .map_or(0, |s| s.origin.rank())
    };
    let domain_rank = rank_of("dns_sd_domain");
    let server_rank = rank_of("dns_sd_server");
    if domain_rank == 0 {
        if server_rank == 3 {
            return Err(LoadError::Usage(cmd.clone().error(
                ErrorKind::MissingRequiredArgument,
                "--dns-sd-server needs --dns-sd-domain",
            )));
        }
        if server_rank > 0 {
            settled.drop_dns_sd_server = true;
            set_aside(settings, "dns_sd_server", "no --dns-sd-domain");
        }
        return Ok(other_rank);
    }
    if !ONE_INDEX.contains(&leaf) || other_rank == 0 {
        return Ok(other_rank.max(domain_rank));
    }
    let other = if settings
        .get("auto_discover")
        .is_some_and(|a| a.values.iter().any(|v| v == "true") && a.set_aside.is_none())
    {
        ("auto_discover", "--auto-discover", "auto-discover = true")
    } else {
        ("servers", "--server <HOST[:PORT]>", "a server")
    };
    if domain_rank == other_rank {
        if let Origin::File { path, line } = &settings["dns_sd_domain"].origin {
            return Err(LoadError::File(anyhow::anyhow!(
                "{}:{line}: dns-sd-domain and {} are both set: keep one (only `search`, `peer` and `doctor` use several indexes)",
                path.display(),
                other.2
            )));
        }
        return Err(LoadError::Usage(cmd.clone().error(
            ErrorKind::ArgumentConflict,
            format!(
                "the argument '--dns-sd-domain <DOMAIN>' cannot be used with '{}' (only `search`, `peer` and `doctor` use several indexes)",
                other.1
            ),
        )));
    }
    if domain_rank > other_rank {
        settled.drop_server = true;
        settled.drop_auto_discover = true;
        for id in ["servers", "auto_discover"] {
            if settings.get(id).is_some_and(|s| !s.values.is_empty()) {
                set_aside(settings, id, "--dns-sd-domain is given");
            }
        }
        return Ok(domain_rank);
    }
    settled.drop_dns_sd_domain = true;
    settled.drop_dns_sd_server = true;
    let why = if other.0 == "auto_discover" {
        "--auto-discover is given"
    } else {
        "a server is given"
    };
    set_aside(settings, "dns_sd_domain", why);
    if server_rank > 0 {
        set_aside(settings, "dns_sd_server", why);
    }
    Ok(other_rank)
}

impl Settled {
    /// Leaves out of the flags what [`settle`] set aside.
    fn apply(&self, cli: &mut Cli) {
        let index = match &mut cli.command {
            Sub::Peer(args) => {
                if self.drop_server {
                    args.servers.clear();
                }
                if self.drop_auto_discover {
                    args.auto_discover = false;
                }
                if self.drop_server_name {
                    args.server_name = None;
                }
                if self.drop_mdns_interfaces {
                    args.mdns_interfaces.clear();
                }
                if self.drop_server_id {
                    args.server_id = None;
                }
                self.apply_dns_sd(&mut args.dns_sd);
                return;
            }
            Sub::Doctor(args) => {
                if self.drop_server_id {
                    args.server_id = None;
                }
                self.apply_dns_sd(&mut args.dns_sd);
                return;
            }
            Sub::Search(args) => &mut args.index,
            Sub::Send(args) => &mut args.index,
            Sub::Receive(args) => &mut args.index,
            _ => return,
        };
        if self.drop_server {
            index.servers.clear();
        }
        if self.drop_auto_discover {
            index.auto_discover = false;
        }
        if self.drop_server_name {
            index.server_name = None;
        }
        if self.drop_server_id {
            index.server_id = None;
        }
        self.apply_dns_sd(&mut index.dns_sd);
    }

    fn apply_dns_sd(&self, args: &mut crate::cli::DnsSdArgs) {
        if self.drop_dns_sd_domain {
            args.domain = None;
        }
        if self.drop_dns_sd_server {
            args.server = None;
        }
    }
}

/// Marks a setting as given but not used, saying why.
fn set_aside(settings: &mut Settings, id: &str, why: &str) {
    if let Some(setting) = settings.get_mut(id) {
        setting.set_aside = Some(why.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags of `server` and `peer` that say what one run does, not how the node is set up:
    /// never in the file.
    const RUN_ONLY: &[&str] = &[
        "help",
        "version",
        "verbose",
        "quiet",
        "config",
        "interactive",
        "json",
        "register",
        "write-manifest",
        "download",
        // Listed in [index] (shared with the one-shot commands), not in [peer].
        "server",
        "server-id",
        "auto-discover",
        "discover-timeout",
        "server-name",
        "dns-sd-domain",
        "dns-sd-server",
        // At the top level.
        "identity-dir",
    ];

    fn file(text: &str) -> ConfigFile {
        parse_file(Path::new("/etc/p2p/config.toml"), text).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse_file(Path::new("/etc/p2p/config.toml"), text).unwrap_err()
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("p2p-transfer")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn peer(config: &ConfigFile, args: &[&str]) -> Box<crate::cli::PeerArgs> {
        let mut all = vec!["peer"];
        all.extend_from_slice(args);
        match parse(&argv(&all), Some(config)).unwrap().command {
            Sub::Peer(args) => args,
            _ => panic!("not peer"),
        }
    }

    fn file_error(config: &ConfigFile, args: &[&str]) -> String {
        match parse(&argv(args), Some(config)) {
            Err(LoadError::File(err)) => crate::errors::one_line(&err),
            Err(LoadError::Usage(err)) => panic!("usage error: {err}"),
            Ok(_) => panic!("no error"),
        }
    }

    #[test]
    fn every_key_is_a_flag_of_a_command_it_applies_to() {
        let cmd = Cli::command();
        for section in SECTIONS {
            for key in section.keys {
                let found = leaves(&cmd).iter().any(|path| {
                    let leaf = find_leaf(&cmd, path).unwrap();
                    section.reaches(key, path.last().unwrap(), leaf)
                });
                assert!(found, "[{}] {key} is no flag", section.name);
            }
            // What a section lends another command is a flag there.
            for (command, keys) in section.also {
                let leaf = cmd.find_subcommand(command).unwrap();
                for key in *keys {
                    assert!(
                        leaf.get_arguments().any(|a| a.get_long() == Some(key)),
                        "[{}] {key} is no flag of {command}",
                        section.name
                    );
                }
            }
        }
    }

    #[test]
    fn every_flag_of_server_and_peer_is_a_setting_or_run_only() {
        let cmd = Cli::command();
        for role in ["server", "peer"] {
            let sub = cmd.find_subcommand(role).unwrap();
            let section = SECTIONS.iter().find(|s| s.name == role).unwrap();
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                assert!(
                    section.keys.contains(&long) || RUN_ONLY.contains(&long),
                    "{role} --{long}: add it to [{role}] in SECTIONS, or to RUN_ONLY"
                );
            }
        }
    }

    #[test]
    fn the_file_fills_in_what_no_flag_gives() {
        let config = file(
            "identity-dir = \"keys\"\n[index]\nserver = \"index.lan:9\"\n[peer]\nworkers = 3\n\
             share-dir = [\"a\", \"~/b\"]\nweb = true\nstall-timeout = \"1m\"\n",
        );
        let args = peer(&config, &[]);
        assert_eq!(args.workers, 3);
        assert_eq!(args.servers[0].to_string(), "index.lan:9");
        assert_eq!(
            args.identity.identity_dir,
            Some(PathBuf::from("/etc/p2p/keys"))
        );
        assert_eq!(args.share_dirs[0], PathBuf::from("/etc/p2p/a"));
        if let Some(home) = dirs::home_dir() {
            assert_eq!(args.share_dirs[1], home.join("b"));
        }
        assert_eq!(args.web, Some(p2p_web::config::DEFAULT_PEER_WEB_ADDR));
        assert_eq!(args.stall_timeout, std::time::Duration::from_secs(60));
        // A flag beats the file; a flag's list replaces the file's.
        let args = peer(&config, &["-w", "5", "--share-dir", "c"]);
        assert_eq!(args.workers, 5);
        assert_eq!(args.share_dirs, vec![PathBuf::from("c")]);
        // `web = false` leaves it off.
        assert_eq!(peer(&file("[peer]\nweb = false\n"), &[]).web, None);
    }

    #[test]
    fn auto_discover_as_a_flag_beats_the_files_server_and_the_other_way_round() {
        let config = file("[index]\nserver = \"10.0.0.1\"\nserver-name = \"lab\"\n");
        let args = peer(&config, &["--auto-discover"]);
        assert!(args.auto_discover);
        assert!(args.servers.is_empty());
        assert_eq!(args.server_name.as_deref(), Some("lab"));
        // Without --auto-discover, the file's server-name has nothing to pick among.
        let args = peer(&config, &[]);
        assert_eq!(args.server_name, None);
        let discover = file("[index]\nauto-discover = true\n[peer]\nmdns-interface = [\"eth0\"]\n");
        let args = peer(&discover, &["--server", "10.0.0.2"]);
        assert!(!args.auto_discover);
        assert_eq!(args.servers[0].to_string(), "10.0.0.2:8000");
        assert!(args.mdns_interfaces.is_empty());
        // The one-shot commands too.
        let Sub::Receive(args) = parse(&argv(&["receive", "x", "--auto-discover"]), Some(&config))
            .unwrap()
            .command
        else {
            panic!("not receive")
        };
        assert!(args.index.auto_discover && args.index.servers.is_empty());
        // Both in the file: which one is meant?
        let both = file("[index]\nserver = \"10.0.0.1\"\nauto-discover = true\n");
        let err = file_error(&both, &["search", "x"]);
        assert!(
            err.contains("/etc/p2p/config.toml:3") && err.contains("keep one"),
            "{err}"
        );
        // Both as flags: clap's usage error, as before.
        assert!(matches!(
            parse(&argv(&["peer", "--auto-discover", "-s", "h"]), None),
            Err(LoadError::Usage(_))
        ));
        assert!(matches!(
            parse(&argv(&["search", "x", "--server-name", "lab"]), None),
            Err(LoadError::Usage(_))
        ));
    }

    fn doctor(config: &ConfigFile, args: &[&str]) -> crate::cli::DoctorArgs {
        let mut all = vec!["doctor"];
        all.extend_from_slice(args);
        match parse(&argv(&all), Some(config)).unwrap().command {
            Sub::Doctor(args) => args,
            _ => panic!("not doctor"),
        }
    }

    #[test]
    fn doctor_checks_the_index_port_and_folder_the_peer_uses() {
        let id = "A3R7-3D62-FG5W-BK2Z-KV66-MHW3-BLWN-WIYRJ";
        let config = file(&format!(
            "identity-dir = \"keys\"\n[index]\nserver = \"10.0.0.1:9\"\nserver-id = \"{id}\"\n\
             discover-timeout = \"7s\"\nserver-name = \"lab\"\n[peer]\naddr = \"0.0.0.0:7001\"\n\
             out = \"dl\"\nadvertise-addr = \"192.168.1.20:7001\"\nworkers = 3\n\
             mdns-interface = [\"eth9\"]\n"
        ));
        let args = doctor(&config, &[]);
        assert_eq!(args.server.unwrap().to_string(), "10.0.0.1:9");
        assert_eq!(args.server_id.map(|n| n.to_string()).as_deref(), Some(id));
        assert_eq!(args.discover_timeout, std::time::Duration::from_secs(7));
        assert_eq!(args.addr, "0.0.0.0:7001".parse().unwrap());
        assert_eq!(args.out, PathBuf::from("/etc/p2p/dl"));
        assert_eq!(
            args.advertise_addr,
            Some("192.168.1.20:7001".parse().unwrap())
        );
        assert_eq!(
            args.identity.identity_dir,
            Some(PathBuf::from("/etc/p2p/keys"))
        );
        // The peer's mDNS interfaces are for its --auto-discover, not doctor's query.
        assert!(args.mdns_interfaces.is_empty());
        // Flags still win; another index given sets the file's id aside.
        let args = doctor(&config, &["--server", "10.0.0.2", "--addr", "127.0.0.1:0"]);
        assert_eq!(args.server.unwrap().to_string(), "10.0.0.2:8000");
        assert_eq!(args.server_id, None);
        assert_eq!(args.addr, "127.0.0.1:0".parse().unwrap());
        // A bad value of [peer] is named when doctor runs, as when peer does.
        let err = file_error(&file("[peer]\naddr = \"nowhere\"\n"), &["doctor"]);
        assert!(err.contains(":2:8: addr in [peer]: invalid value"), "{err}");
        // But [peer]'s other keys are not doctor's business.
        assert!(parse(&argv(&["doctor"]), Some(&file("[peer]\nworkers = 0\n"))).is_ok());
    }

    #[test]
    fn only_search_and_peer_take_several_servers() {
        let list = file("[index]\nserver = [\"a\", \"b\"]\n");
        for command in [&["send", "f"][..], &["receive", "p2p1x"], &["doctor"]] {
            let err = file_error(&list, command);
            assert!(
                err.starts_with("/etc/p2p/config.toml:2:10: server in [index]: ")
                    && err.contains(&format!(
                        "`p2p-transfer {}` uses one index server, not a list",
                        command[0]
                    )),
                "{err}"
            );
        }
        // A list of one is one.
        let one = file("[index]\nserver = [\"a\"]\n");
        let Sub::Send(args) = parse(&argv(&["send", "f"]), Some(&one)).unwrap().command else {
            panic!("not send")
        };
        assert_eq!(args.index.servers.len(), 1);
        // Twice as a flag: a usage error, not a warning once it runs.
        for command in ["send", "receive"] {
            let Err(LoadError::Usage(err)) = parse(
                &argv(&[command, "x", "-s", "127.0.0.1:1", "-s", "127.0.0.1:2"]),
                None,
            ) else {
                panic!("{command}: no usage error")
            };
            assert!(
                err.to_string().contains("uses one index server"),
                "{command}: {err}"
            );
        }
        assert!(
            parse(
                &argv(&["search", "x", "-s", "127.0.0.1:1", "-s", "127.0.0.1:2"]),
                None
            )
            .is_ok()
        );
        // A peer registers with every one, from the flags or the file.
        let Sub::Peer(args) = parse(
            &argv(&["peer", "-s", "127.0.0.1:1", "-s", "127.0.0.1:2"]),
            None,
        )
        .unwrap()
        .command
        else {
            panic!("not peer")
        };
        assert_eq!(args.servers.len(), 2);
        let Sub::Peer(args) = parse(&argv(&["peer"]), Some(&list)).unwrap().command else {
            panic!("not peer")
        };
        assert_eq!(args.servers.len(), 2);
    }

    #[test]
    fn commands_that_take_no_setting_do_not_read_the_file() {
        let cmd = Cli::command();
        let reads = |line: &[&str]| reads_the_file(&cmd, &first_look(&argv(line)).1);
        assert!(!reads(&["completions", "bash"]));
        assert!(!reads(&["man", "/tmp/x"]));
        assert!(!reads(&["help", "peer"]));
        assert!(!reads(&[]));
        for line in [
            &["config"][..],
            &["id"],
            &["doctor"],
            &["peer"],
            &["receive", "x"],
            &["manifest", "create", "f"],
        ] {
            assert!(reads(line), "{line:?}");
        }
    }

    #[test]
    fn the_files_server_id_goes_with_the_files_server() {
        let id = "A3R7-3D62-FG5W-BK2Z-KV66-MHW3-BLWN-WIYRJ";
        let config = file(&format!(
            "[index]\nserver = \"10.0.0.1\"\nserver-id = \"{id}\"\n"
        ));
        // From the file, both apply.
        let args = peer(&config, &[]);
        assert_eq!(args.server_id.map(|n| n.to_string()).as_deref(), Some(id));
        // Another index on the command line: the file's id would refuse it.
        let args = peer(&config, &["--server", "10.0.0.2"]);
        assert_eq!(args.server_id, None);
        let args = peer(&config, &["--auto-discover"]);
        assert_eq!(args.server_id, None);
        // An id given with the flag stays.
        let args = peer(&config, &["--server", "10.0.0.2", "--server-id", id]);
        assert_eq!(args.server_id.map(|n| n.to_string()).as_deref(), Some(id));
    }

    #[test]
    fn unknown_keys_and_sections_are_named_with_their_place() {
        let err = parse_err("[peer]\nworkers = 3\nwokers = 4\n");
        assert!(
            err.starts_with("/etc/p2p/config.toml:3:1: unknown key \"wokers\" in [peer]"),
            "{err}"
        );
        let err = parse_err("workers = 3\n");
        assert!(
            err.contains(":1:1: unknown key \"workers\" at the top level"),
            "{err}"
        );
        let err = parse_err("[pear]\nworkers = 3\n");
        assert!(err.contains(":1:2: unknown section [pear]"), "{err}");
        // A run's action is no setting.
        let err = parse_err("[peer]\ndownload = \"abc\"\n");
        assert!(err.contains("unknown key \"download\""), "{err}");
        let err = parse_err("[peer]\nworkers = \n");
        assert!(err.starts_with("/etc/p2p/config.toml:2:"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn a_bad_value_is_named_with_its_place_and_the_flags_own_reason() {
        let err = file_error(&file("[peer]\n\nworkers = 0\n"), &["peer"]);
        assert!(
            err.starts_with("/etc/p2p/config.toml:3:11: workers in [peer]: invalid value \"0\""),
            "{err}"
        );
        assert!(err.contains("1..=256"), "{err}");
        let err = file_error(&file("[server]\naddr = \"nowhere\"\n"), &["server"]);
        assert!(
            err.contains(":2:8: addr in [server]: invalid value \"nowhere\""),
            "{err}"
        );
        let err = file_error(&file("[server]\nno-mdns = \"yes\"\n"), &["server"]);
        assert!(err.contains("expected true or false"), "{err}");
        let err = file_error(&file("[index]\nserver = [\"a\", \"b\"]\n"), &["send", "f"]);
        assert!(err.contains("uses one index server, not a list"), "{err}");
        // A section that doesn't apply to the command run is not checked against it...
        assert!(parse(&argv(&["id"]), Some(&file("[peer]\nworkers = 0\n"))).is_ok());
        // ...but a list of servers is fine where several are asked.
        let Sub::Search(args) = parse(
            &argv(&["search", "x"]),
            Some(&file("[index]\nserver = [\"a\", \"b\"]\n")),
        )
        .unwrap()
        .command
        else {
            panic!("not search")
        };
        assert_eq!(args.index.servers.len(), 2);
    }

    #[test]
    fn a_missing_file_is_fine_only_at_the_default_place() {
        let missing = PathBuf::from("/nonexistent/p2p-transfer/config.toml");
        let default = Location {
            path: Some(missing.clone()),
            explicit: false,
        };
        assert!(read(&default).unwrap().is_none());
        let given = Location {
            path: Some(missing),
            explicit: true,
        };
        let Err(LoadError::File(err)) = read(&given) else {
            panic!("no error")
        };
        let err = crate::errors::one_line(&err);
        assert!(
            err.starts_with("cannot read the config file /nonexistent/p2p-transfer/config.toml"),
            "{err}"
        );
    }

    #[test]
    fn config_is_found_anywhere_on_the_line() {
        for line in [
            &["--config", "/x.toml", "peer"][..],
            &["peer", "--config", "/x.toml"],
            &["peer", "--config=/x.toml", "-w", "0"],
            &["receive", "--config", "/x.toml"],
            &["config", "peer", "--config", "/x.toml"],
            &[
                "--config", "/y.toml", "config", "peer", "--config", "/x.toml",
            ],
        ] {
            assert_eq!(
                first_look(&argv(line)).0,
                Location {
                    path: Some("/x.toml".into()),
                    explicit: true
                },
                "{line:?}"
            );
        }
    }

    #[test]
    fn dns_sd_adds_indexes_where_several_are_used_and_is_weighed_where_one_is() {
        let index = |args: &[&str], config: Option<&ConfigFile>| -> crate::cli::IndexArgs {
            match parse(&argv(args), config).unwrap().command {
                Sub::Search(a) => a.index,
                Sub::Send(a) => a.index,
                Sub::Receive(a) => a.index,
                _ => panic!("no index"),
            }
        };
        let site = file("[index]\ndns-sd-domain = \"school.lan\"\ndns-sd-server = \"10.0.0.53\"\n");
        // The file reaches every command that finds indexes, peer and doctor too.
        let args = index(&["receive", "x"], Some(&site));
        assert_eq!(args.dns_sd.domain.as_deref(), Some("school.lan"));
        assert_eq!(args.dns_sd.server, Some("10.0.0.53:53".parse().unwrap()));
        assert_eq!(
            peer(&site, &[]).dns_sd.domain.as_deref(),
            Some("school.lan")
        );
        let Sub::Doctor(doctor) = parse(&argv(&["doctor"]), Some(&site)).unwrap().command else {
            panic!("not doctor")
        };
        assert_eq!(doctor.dns_sd.domain.as_deref(), Some("school.lan"));
        // search asks every source: a flag's server keeps the file's domain.
        let args = index(&["search", "x", "-s", "10.0.0.1"], Some(&site));
        assert_eq!(args.servers.len(), 1);
        assert_eq!(args.dns_sd.domain.as_deref(), Some("school.lan"));
        // send and receive use one index: the louder wins, as with --auto-discover.
        for command in [&["send", "f"][..], &["receive", "x"][..]] {
            let args = index(&[command, &["-s", "10.0.0.1"]].concat(), Some(&site));
            assert_eq!(args.servers.len(), 1);
            assert_eq!(args.dns_sd.domain, None, "{command:?}");
            assert_eq!(args.dns_sd.server, None, "{command:?}");
            let args = index(&[command, &["--auto-discover"]].concat(), Some(&site));
            assert!(args.auto_discover && args.dns_sd.domain.is_none());
            let server = file("[index]\nserver = \"10.0.0.1\"\n");
            let args = index(
                &[command, &["--dns-sd-domain", "other.lan"]].concat(),
                Some(&server),
            );
            assert!(args.servers.is_empty());
            assert_eq!(args.dns_sd.domain.as_deref(), Some("other.lan"));
            // Equally loud: which one is meant?
            let both = file("[index]\nserver = \"10.0.0.1\"\ndns-sd-domain = \"school.lan\"\n");
            let err = file_error(&both, command);
            assert!(
                err.contains("/etc/p2p/config.toml:3") && err.contains("keep one"),
                "{err}"
            );
            let Err(LoadError::Usage(err)) = parse(
                &argv(&[command, &["-s", "h", "--dns-sd-domain", "d.lan"]].concat()),
                None,
            ) else {
                panic!("no usage error")
            };
            assert!(
                err.to_string()
                    .contains("'--dns-sd-domain <DOMAIN>' cannot be used with '--server"),
                "{err}"
            );
        }
        // A nameserver without a domain: set aside from the file, an error as a flag.
        let lone = file("[index]\ndns-sd-server = \"10.0.0.53\"\n");
        assert_eq!(index(&["search", "x"], Some(&lone)).dns_sd.server, None);
        assert!(matches!(
            parse(
                &argv(&["search", "x", "--dns-sd-server", "10.0.0.53"]),
                None
            ),
            Err(LoadError::Usage(_))
        ));
        // Values are checked as the flags check them.
        let err = file_error(
            &file("[index]\ndns-sd-server = \"dns.lan\"\n"),
            &["search", "x"],
        );
        assert!(
            err.contains("dns-sd-server in [index]") && err.contains("IP address"),
            "{err}"
        );
    }
}
