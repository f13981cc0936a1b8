//! README.md as a test: every `console` block runs, in order, against a dev hub, and each
//! command's output and exit status must match what the README shows. The README cannot
//! drift from what the binaries do.
//!
//! Format (the one trycmd uses): `$ command` (continued on the next line after a trailing
//! `\`), then the expected output, stdout and stderr together. `...` on a line of its own
//! stands for any lines, `[..]` for any text within a line. A line `? N` right after the
//! command expects exit status N (default 0). A ```` ```toml FILE ```` block is written to
//! FILE before the commands after it run. Commands run in `bash`, in one working
//! directory, and `export`s carry over from command to command, as in one terminal.
//!
//! The hub is started as the README's `efa-hub dev` line says, on free ports; the README's
//! `127.0.0.1:50051` and `:50443` stand for them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
const GRPC_PORT: &str = "127.0.0.1:50051";
const DASHBOARD_PORT: &str = "127.0.0.1:50443";

/// One step of the walkthrough.
enum Step {
    Command { line: usize, command: String, expected: String, status: i32 },
    File { line: usize, path: String, content: String },
}

fn parse(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = readme.lines().enumerate().peekable();
    while let Some((_, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let mut block = Vec::new();
        for (n, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            block.push((n + 1, l));
        }
        let mut words = info.split_whitespace();
        match (words.next(), words.next()) {
            (Some("console"), _) => steps.extend(parse_console(&block)),
            (Some(_), Some(file)) if !file.contains('=') => steps.push(Step::File {
                line: block.first().map_or(0, |(n, _)| *n),
                path: file.to_string(),
                content: block.iter().map(|(_, l)| format!("{l}\n")).collect(),
            }),
            _ => {}
        }
    }
    steps
}

fn parse_console(block: &[(usize, &str)]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut i = 0;
    while i < block.len() {
        let (line, text) = block[i];
        let Some(first) = text.strip_prefix("$ ") else {
            panic!("README.md:{line}: a console block must start each command with `$ `: {text:?}");
        };
        let mut command = first.to_string();
        i += 1;
        while command.ends_with('\\') && i < block.len() {
            command.push('\n');
            command.push_str(block[i].1);
            i += 1;
        }
        let mut status = 0;
        if let Some(code) = block.get(i).and_then(|(_, l)| l.strip_prefix("? ")) {
            status = code.trim().parse().unwrap_or_else(|_| panic!("README.md:{}: `? N` needs a number", block[i].0));
            i += 1;
        }
        let mut expected = String::new();
        while i < block.len() && !block[i].1.starts_with("$ ") {
            expected.push_str(block[i].1);
            expected.push('\n');
            i += 1;
        }
        steps.push(Step::Command { line, command, expected, status });
    }
    steps
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").to_string()
}

struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_hub(bins: &Path, dir: &Path, grpc: &str, dashboard: &str) -> Hub {
    let log = dir.join("hub.log");
    let child = Command::new(bins.join("efa-hub"))
        .current_dir(dir)
        .args(["dev", "--data-dir", "efa-data", "--listen", grpc, "--dashboard-listen", dashboard])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("hub log"))
        .spawn()
        .expect("efa-hub starts");
    let hub = Hub(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("hub listening") {
        assert!(
            Instant::now() < deadline,
            "the dev hub did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    hub
}

#[test]
fn every_console_block_of_the_readme_runs_as_written() {
    let steps = parse(&std::fs::read_to_string(README).expect("README.md"));
    let commands = steps.iter().filter(|s| matches!(s, Step::Command { .. })).count();
    assert!(commands >= 20, "the README walkthrough has only {commands} commands");

    let bins = efa_testkit::bins::build(&["efa-hub", "efa-node", "efa-cli"]);
    let dir = tempfile::tempdir().expect("work dir");
    let work = dir.path().join("walkthrough");
    std::fs::create_dir_all(&work).unwrap();
    let (grpc, dashboard) = (free_port(), free_port());
    let _hub = start_hub(&bins, &work, &grpc, &dashboard);
    let to_real = |s: &str| s.replace(GRPC_PORT, &grpc).replace(DASHBOARD_PORT, &dashboard);
    let to_readme = |s: &str| s.replace(&grpc, GRPC_PORT).replace(&dashboard, DASHBOARD_PORT);

    // The shell state that carries over: exported variables and the working directory.
    let env_file = dir.path().join("env.sh");
    let pwd_file = dir.path().join("pwd");
    std::fs::write(&env_file, "").unwrap();
    std::fs::write(&pwd_file, work.to_str().unwrap()).unwrap();
    let path = format!("{}:{}", bins.display(), std::env::var("PATH").unwrap_or_default());

    for step in steps {
        match step {
            Step::File { line, path, content } => {
                let cwd = PathBuf::from(std::fs::read_to_string(&pwd_file).unwrap().trim_end());
                std::fs::write(cwd.join(&path), to_real(&content))
                    .unwrap_or_else(|e| panic!("README.md:{line}: cannot write {path}: {e}"));
            }
            Step::Command { line, command, expected, status } => {
                let script = format!(
                    "exec 2>&1\nsource {env}\ncd \"$(cat {pwd})\"\n{cmd}\nrc=$?\nexport -p > {env}\npwd > {pwd}\nexit $rc\n",
                    env = env_file.display(),
                    pwd = pwd_file.display(),
                    cmd = to_real(&command),
                );
                let out = Command::new("bash")
                    .arg("-c")
                    .arg(&script)
                    .env_clear()
                    .env("PATH", &path)
                    .env("HOME", dir.path())
                    .env("LANG", "C.UTF-8")
                    .env("NO_COLOR", "1")
                    .stdin(Stdio::null())
                    .output()
                    .expect("bash runs");
                let actual = to_readme(&String::from_utf8_lossy(&out.stdout));
                let code = out.status.code().unwrap_or(-1);
                eprintln!("README.md:{line}: $ {command}\n{actual}");
                assert_eq!(
                    code, status,
                    "README.md:{line}: `{command}` exited with {code}, the README expects {status}:\n{actual}"
                );
                snapbox::Assert::new().eq(actual, expected);
            }
        }
    }
}
