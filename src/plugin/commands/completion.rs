//! `completion bash|zsh|fish`: clap_complete's script for the binary `kubectl-webhooks`.
//!
//! clap_complete's bash script spells a hyphenated binary's subcommand states two ways, so
//! nothing after a subcommand completes (clap-rs/clap#6421). Bash's script is therefore made for
//! `kubectl_webhooks` and registered for `kubectl-webhooks`.
use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::plugin::cli::Cli;
use crate::plugin::Exit;

const BIN: &str = "kubectl-webhooks";

/// The script for `shell`.
pub fn script(shell: Shell) -> String {
    let name = if shell == Shell::Bash {
        BIN.replace('-', "_")
    } else {
        BIN.to_owned()
    };
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name.as_str(), &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    if shell != Shell::Bash {
        return script;
    }
    // Only the `complete … kubectl_webhooks` lines name the binary; register it by its name.
    script
        .lines()
        .map(|line| match line.trim_start().starts_with("complete ") {
            true => line.replace(&format!(" {name}"), &format!(" {BIN}")),
            false => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Writes the script; needs no cluster.
pub fn run(out: &mut (dyn Write + Send), shell: Shell) -> anyhow::Result<Exit> {
    out.write_all(script(shell).as_bytes())?;
    out.flush()?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What bash completes after `words` (the last one being completed).
    fn bash_completes(script: &str, words: &[&str]) -> Option<String> {
        let dir = tempfile::tempdir().ok()?;
        let file = dir.path().join("completion.bash");
        std::fs::write(&file, script).ok()?;
        let words_list: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let current = words.len() - 1;
        let program = format!(
            "source {file}; COMP_WORDS=({words}); COMP_CWORD={current}; \
             _kubectl_webhooks kubectl-webhooks '{cur}' '{prev}'; echo \"${{COMPREPLY[*]}}\"",
            file = file.display(),
            words = words_list.join(" "),
            cur = words[current],
            prev = words[current - 1],
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &program])
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    #[test]
    fn bash_completes_subcommands_and_their_flags() {
        let script = script(Shell::Bash);
        assert!(
            script.contains("-F _kubectl_webhooks") && script.contains(" kubectl-webhooks\n"),
            "registered for the binary's name"
        );
        let Some(top) = bash_completes(&script, &["kubectl-webhooks", "hist"]) else {
            return; // no bash here
        };
        assert_eq!(top, "history");
        let flags = bash_completes(&script, &["kubectl-webhooks", "history", "crm", "--out"]);
        assert_eq!(flags.as_deref(), Some("--outcome --output"));
        let values = bash_completes(
            &script,
            &["kubectl-webhooks", "history", "crm", "--outcome", "F"],
        );
        assert_eq!(values.as_deref(), Some("Failed Filtered"));
    }

    #[test]
    fn zsh_and_fish_name_the_binary() {
        assert!(script(Shell::Zsh).starts_with("#compdef kubectl-webhooks"));
        assert!(script(Shell::Fish).contains("complete -c kubectl-webhooks"));
    }
}
