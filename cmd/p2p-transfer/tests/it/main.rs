//! The one integration-test binary (ripgrep style): in-process transfers, the binary's CLI,
//! and hostile input against real listeners. Everything runs on 127.0.0.1, ports chosen by
//! the OS.

mod allow;
mod api_doc;
mod bad_input;
mod browser;
mod cli;
mod cli_defaults;
mod cli_errors;
mod cli_json;
mod config;
mod connections;
mod direct;
mod dns_sd;
mod doctor;
mod downloads;
mod faults;
mod folders;
mod heartbeat;
mod hostile_disk;
mod hostile_text;
mod index;
mod indexes;
mod install;
mod mdns;
mod netns;
mod pinning;
mod process;
mod send_receive;
mod share_dir;
mod shell;
mod shell_edges;
mod site;
mod support;
mod tools;
mod topology;
mod transfer;
mod trust;
mod web_api;
mod web_browser;
mod web_security;
mod web_support;
mod web_upload;
