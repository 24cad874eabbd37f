//! Installing like other tools: completion scripts, man pages, `make install` into a staging
//! folder, and the systemd units in contrib/systemd (checked by `systemd-analyze` where it
//! exists, skipped with a note otherwise).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::process::bin;

/// The workspace root (the Makefile, contrib/).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `program` if it is on PATH; otherwise `None`, after printing why `test` is skipped.
fn tool(program: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        eprintln!("skipping {test}: {program} not found");
    }
    found
}

#[test]
fn completions_name_the_real_subcommands_and_flags() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let output = bin().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        let script = stdout(&output);
        for word in ["send", "receive", "search", "manifest", "auto-discover"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        assert!(!script.contains("--no-such-flag"), "{shell}");
    }
}

#[test]
fn bash_completion_script_loads_and_completes_subcommands() {
    let Some(bash) = tool(
        "bash",
        "bash_completion_script_loads_and_completes_subcommands",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("p2p-transfer.bash");
    let output = bin().args(["completions", "bash"]).output().unwrap();
    std::fs::write(&script, &output.stdout).unwrap();
    // What bash offers after `p2p-transfer rec<TAB>`, as its completion machinery would ask.
    let probe = format!(
        "source {}; spec=$(complete -p p2p-transfer) || exit 3; \
         fn=${{spec#*-F }}; fn=${{fn%% *}}; \
         COMP_WORDS=(p2p-transfer rec); COMP_CWORD=1; COMP_LINE='p2p-transfer rec'; \
         COMP_POINT=${{#COMP_LINE}}; \"$fn\" p2p-transfer rec p2p-transfer; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let output = Command::new(bash)
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "receive", "{}", stderr(&output));
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error() {
    let output = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(err.contains("bash, elvish, fish, powershell, zsh"), "{err}");
}

#[test]
fn man_pages_one_per_command_with_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let output = bin().arg("man").arg(&out).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let listed: Vec<PathBuf> = stdout(&output).lines().map(PathBuf::from).collect();
    let page = |name: &str| out.join(format!("{name}.1"));
    for name in [
        "p2p-transfer",
        "p2p-transfer-send",
        "p2p-transfer-receive",
        "p2p-transfer-server",
        "p2p-transfer-peer",
        "p2p-transfer-search",
        "p2p-transfer-manifest",
        "p2p-transfer-manifest-create",
        "p2p-transfer-id",
        "p2p-transfer-completions",
    ] {
        assert!(
            listed.contains(&page(name)),
            "{name} not listed: {listed:?}"
        );
    }
    for path in &listed {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(".TH "), "{} is no man page", path.display());
    }
    // Neither the build step itself nor clap's `help` gets a page.
    assert!(!page("p2p-transfer-man").exists());
    assert!(!page("p2p-transfer-help").exists());
    let peer = std::fs::read_to_string(page("p2p-transfer-peer")).unwrap();
    assert!(peer.contains(r"\-\-auto\-discover"), "{peer}");
    assert!(peer.contains(r"\-\-share\-dir"), "{peer}");
    let send = std::fs::read_to_string(page("p2p-transfer-send")).unwrap();
    assert!(send.contains(r"\-\-advertise\-addr"), "{send}");
    let top = std::fs::read_to_string(page("p2p-transfer")).unwrap();
    assert!(
        top.contains(&format!("p2p-transfer {}", env!("CARGO_PKG_VERSION"))),
        "the version is on the page: {top}"
    );
}

/// `make` without the jobserver of a `make test` that may be running this test.
fn make(args: &[&str]) -> Output {
    Command::new("make")
        .current_dir(repo_root())
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .args(args)
        .output()
        .unwrap()
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn make_install_honours_prefix_and_destdir_and_uninstall_removes_it_all() {
    if tool("make", "make_install_honours_prefix_and_destdir").is_none() {
        return;
    }
    let stage = tempfile::tempdir().unwrap();
    let destdir = format!("DESTDIR={}", stage.path().display());
    let bin_var = format!("BIN={}", env!("CARGO_BIN_EXE_p2p-transfer"));
    // `-o build`: the binary this test runs stands in for the release build.
    let output = make(&[
        "-o",
        "build",
        "install",
        &bin_var,
        &destdir,
        "PREFIX=/opt/p2p",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let files = files_under(stage.path());
    for expected in [
        "opt/p2p/bin/p2p-transfer",
        "opt/p2p/share/man/man1/p2p-transfer.1",
        "opt/p2p/share/man/man1/p2p-transfer-receive.1",
        "opt/p2p/share/bash-completion/completions/p2p-transfer",
        "opt/p2p/share/zsh/site-functions/_p2p-transfer",
        "opt/p2p/share/fish/vendor_completions.d/p2p-transfer.fish",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected}: {files:?}");
    }
    assert!(
        files.iter().all(|f| f.starts_with("opt/p2p/")),
        "only under PREFIX: {files:?}"
    );
    let installed = stage.path().join("opt/p2p/bin/p2p-transfer");
    let output = Command::new(&installed).arg("--version").output().unwrap();
    assert_eq!(
        stdout(&output).trim(),
        format!("p2p-transfer {}", env!("CARGO_PKG_VERSION"))
    );
    let bash = std::fs::read_to_string(
        stage
            .path()
            .join("opt/p2p/share/bash-completion/completions/p2p-transfer"),
    )
    .unwrap();
    assert!(bash.contains("receive"));

    let output = make(&["uninstall", &destdir, "PREFIX=/opt/p2p"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(files_under(stage.path()), Vec::<String>::new());
}

/// The unit files, with the installed binary's path replaced by the one under test (verify
/// checks that it is executable).
fn staged_units(dir: &Path) -> Vec<PathBuf> {
    let source = repo_root().join("contrib/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&source)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    units
        .into_iter()
        .map(|unit| {
            let text = std::fs::read_to_string(&unit).unwrap().replace(
                "/usr/local/bin/p2p-transfer",
                env!("CARGO_BIN_EXE_p2p-transfer"),
            );
            let staged = dir.join(unit.file_name().unwrap());
            std::fs::write(&staged, text).unwrap();
            staged
        })
        .collect()
}

/// The arguments of a unit's `ExecStart=` line, with `%h`, `%S` and `%E` (`HOME/.config`)
/// filled in.
fn exec_start_args(unit: &Path, home: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(unit).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart= line");
    let config_home = home.join(".config");
    line.split_whitespace()
        .skip(1)
        .map(|arg| {
            arg.replace("%h", &home.display().to_string())
                .replace("%S", &home.display().to_string())
                .replace("%E", &config_home.display().to_string())
        })
        .collect()
}

/// The config file the peer unit's header tells a user to write (its `#   #   ` lines).
fn peer_unit_config(unit: &Path) -> String {
    std::fs::read_to_string(unit)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("#   #   "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn systemd_units_take_real_flags() {
    let dir = tempfile::tempdir().unwrap();
    let units = staged_units(dir.path());
    let names: Vec<_> = units.iter().map(|u| u.file_name().unwrap()).collect();
    assert_eq!(
        names,
        ["p2p-transfer-peer.service", "p2p-transfer-server.service"]
    );
    // The peer unit reads the config file its header documents.
    let config = dir.path().join(".config/p2p-transfer/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, peer_unit_config(&units[0])).unwrap();
    for unit in &units {
        // `--help` last: clap refuses a flag it doesn't know before it gets there.
        let mut args = exec_start_args(unit, dir.path());
        args.push("--help".to_owned());
        let output = bin().args(&args).output().unwrap();
        assert!(
            output.status.success(),
            "{}: {args:?}: {}",
            unit.display(),
            stderr(&output)
        );
    }
}

/// The peer unit gives no flag that would beat the config file: a server configured there
/// is the one it uses (and `doctor` checks).
#[test]
fn the_peer_unit_takes_its_settings_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let unit = &staged_units(dir.path())[0];
    let args = exec_start_args(unit, dir.path());
    let config = dir.path().join(".config/p2p-transfer/config.toml");
    assert_eq!(
        args,
        ["peer", "--config", &config.display().to_string()],
        "only the file's own path"
    );
    // As the header says to write it, plus a server of the user's own.
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let documented = peer_unit_config(unit);
    assert!(documented.contains("auto-discover = true"), "{documented}");
    std::fs::write(
        &config,
        documented.replace("auto-discover = true", "server = \"10.1.2.3\""),
    )
    .unwrap();
    // `~/` in the file is this home.
    let output = bin()
        .env("HOME", dir.path())
        .args(["config", "--json"])
        .args(&args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let settings: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let get = |key: &str| {
        settings
            .iter()
            .find(|s| s["key"] == key)
            .unwrap_or_else(|| panic!("no {key}: {settings:#?}"))
    };
    // A peer takes a list of servers: one here.
    assert_eq!(get("server")["value"], serde_json::json!(["10.1.2.3"]));
    assert_eq!(get("server")["source"], "file");
    assert!(get("server")["set_aside"].is_null(), "{}", get("server"));
    assert_eq!(get("auto-discover")["value"], false);
    let home = dir.path().display().to_string();
    assert_eq!(get("share-dir")["value"][0], format!("{home}/Public"));
}

#[test]
fn systemd_units_verify_and_the_server_unit_is_hardened() {
    let test = "systemd_units_verify_and_the_server_unit_is_hardened";
    let Some(analyze) = tool("systemd-analyze", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = staged_units(dir.path());
    // `Documentation=man:...` must name pages that exist: the ones this binary writes.
    let manpath = dir.path().join("man");
    let output = bin().arg("man").arg(manpath.join("man1")).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let man_check = if tool("man", test).is_some() {
        "--man=yes"
    } else {
        eprintln!("{test}: not checking the units' man pages");
        "--man=no"
    };
    // A user manager's paths need a runtime folder, which a CI job has none of.
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    for unit in &units {
        let user = unit.to_string_lossy().contains("-peer.");
        let mut verify = Command::new(&analyze);
        if user {
            verify.arg("--user");
        }
        let output = verify
            .args([man_check, "verify"])
            .arg(unit)
            .env("MANPATH", &manpath)
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap();
        // verify exits 0 on unknown keys and bad values, only saying so: both must be clean.
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "{}: {}",
            unit.display(),
            stderr(&output)
        );
    }

    // systemd's own exposure score (0 = locked down, 10 = none): 1.2 when written.
    let server = dir.path().join("p2p-transfer-server.service");
    let output = Command::new(&analyze)
        .args(["security", "--offline=true", "--threshold=15"])
        .arg(&server)
        .output()
        .unwrap();
    let report = stdout(&output);
    if !output.status.success() && !report.contains("Overall exposure") {
        eprintln!(
            "{test}: this systemd-analyze can't score a unit file: {}",
            stderr(&output)
        );
        return;
    }
    assert!(output.status.success(), "exposure above 1.5:\n{report}");
}
