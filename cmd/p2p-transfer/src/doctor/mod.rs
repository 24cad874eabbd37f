//! `p2p-transfer doctor`: what stands between this machine and a working transfer, one line
//! per check (ok / warning / problem), each problem with its likely cause and the fix.
//!
//! # Layout
//! * this file: [`Check`] and [`Report`], how checks are printed (text or `--json`).
//! * [`local`]: the output folder (free space), the identity folder and key files, partial
//!   downloads (`.part`) a lock or a leftover would stop.
//! * [`interfaces`]: which interfaces are up, have multicast, look like a VPN, a container
//!   bridge or loopback, and which ones mDNS uses.
//! * [`mdns`]: an mDNS query on each usable interface, and what answered.
//! * [`dns_sd`]: the index servers published in DNS (`--dns-sd-domain`).
//! * [`index`]: the index server (given, published in DNS, found over mDNS, or the ones this
//!   machine knows):
//!   TCP, the TLS and `Hello` handshakes, version, round-trip time.
//! * [`reach`]: whether others reach this peer: the index connects back (`Probe`).
//! * [`listeners`]: which sockets listen on a port (`/proc/net/tcp`), to name a port another
//!   program holds.
//!
//! The checks only look: nothing here changes a file or the network's state, except a
//! listener on the peer's port for the few seconds the index takes to connect back.

pub mod dns_sd;
pub mod index;
pub mod interfaces;
pub mod listeners;
pub mod local;
pub mod mdns;
pub mod reach;

use serde::Serialize;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Works.
    Ok,
    /// Works, but may surprise (a VPN interface, little free space).
    Warning,
    /// Stands in the way: the command exits non-zero.
    Problem,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Problem => "problem",
        }
    }
}

/// One line of the report. In `--json` mode, one object (README, "When it doesn't work:
/// doctor", lists the fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Always `"check"`, as every `--json` line names its kind.
    event: &'static str,
    /// Which family: `output_folder`, `identity`, `key_file`, `partial_file`, `interface`,
    /// `mdns`, `dns_sd`, `index`, `reachability`.
    pub check: &'static str,
    /// What it looked at: a path, an interface, an address (empty for a summary).
    pub subject: String,
    /// How it came out.
    pub status: Status,
    /// What was found, one line.
    pub summary: String,
    /// For a warning or problem: the likely cause.
    pub cause: Option<String>,
    /// For a warning or problem: what to do.
    pub fix: Option<String>,
    /// A command that works (or should, once the fix is made): `p2p-transfer peer --server ...`.
    pub command: Option<String>,
}

impl Check {
    /// A check of `check` on `subject`, with `status` and `summary`.
    pub fn new(
        check: &'static str,
        subject: impl Into<String>,
        status: Status,
        summary: impl Into<String>,
    ) -> Self {
        Self {
            event: "check",
            check,
            subject: subject.into(),
            status,
            summary: summary.into(),
            cause: None,
            fix: None,
            command: None,
        }
    }

    /// An `ok` check.
    pub fn ok(check: &'static str, subject: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(check, subject, Status::Ok, summary)
    }

    /// With its cause.
    pub fn cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// With its fix.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// With a command to run.
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// The text lines: `problem  index 10.0.0.2:8000: ...`, then the cause, fix and command
    /// indented under it.
    pub fn lines(&self) -> Vec<String> {
        let label = if self.subject.is_empty() {
            self.check.to_owned()
        } else {
            format!("{} {}", self.check, self.subject)
        };
        let mut lines = vec![format!(
            "{:<8} {label}: {}",
            self.status.word(),
            self.summary
        )];
        let indent = " ".repeat(9);
        if let Some(cause) = &self.cause {
            lines.push(format!("{indent}cause: {cause}"));
        }
        if let Some(fix) = &self.fix {
            lines.push(format!("{indent}fix: {fix}"));
        }
        if let Some(command) = &self.command {
            lines.push(format!("{indent}try: {command}"));
        }
        lines
    }
}

/// The checks made so far.
#[derive(Debug, Default)]
pub struct Report {
    checks: Vec<Check>,
}

impl Report {
    /// Adds `check`.
    pub fn add(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// How many checks came out `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// Prints every check on stdout: text lines, or one JSON object a line.
    pub fn print(&self, json: bool) {
        for check in &self.checks {
            if json {
                let line = serde_json::to_string(check).expect("a check serializes: plain fields");
                println!("{line}");
            } else {
                for line in check.lines() {
                    println!("{line}");
                }
            }
        }
    }
}

/// `1 problem`, `2 warnings`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_prints_its_cause_fix_and_command_under_it() {
        let check = Check::new("mdns", "", Status::Problem, "no index server answered")
            .cause("UDP 5353 is blocked")
            .fix("use --server")
            .command("p2p-transfer peer --server 10.0.0.2:8000");
        assert_eq!(
            check.lines(),
            [
                "problem  mdns: no index server answered",
                "         cause: UDP 5353 is blocked",
                "         fix: use --server",
                "         try: p2p-transfer peer --server 10.0.0.2:8000",
            ]
        );
        let ok = Check::ok("index", "127.0.0.1:8000", "version 4");
        assert_eq!(ok.lines(), ["ok       index 127.0.0.1:8000: version 4"]);
        let json = serde_json::to_value(&check).unwrap();
        assert_eq!(json["event"], "check");
        assert_eq!(json["status"], "problem");
        assert_eq!(json["subject"], "");
        assert!(ok.cause.is_none());
        assert!(serde_json::to_value(&ok).unwrap()["cause"].is_null());
    }
}
