//! `kubectl-webhooks`: the `kubectl webhooks` plugin (docs/kubectl-plugin.md). Wiring only; the
//! plugin is `webhook_operator::plugin`.
fn main() -> std::process::ExitCode {
    webhook_operator::plugin::main()
}
