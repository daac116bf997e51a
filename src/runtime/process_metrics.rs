//! `webhook_operator_build_info` and the standard process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_start_time_seconds`), read from
//! `/proc/self` at each scrape, as the Go and Python clients export them. On a system without
//! `/proc` the process metrics are left out.
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Registers the build info and the process collector.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

/// What `/proc/self/stat` and friends say about this process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub open_fds: f64,
    pub start_time_seconds: f64,
}

/// Parses `/proc/self/stat` (`stat`), the `btime` line of `/proc/stat` (`boot_time`), given the
/// clock ticks per second and the page size. Pure.
pub fn parse_stat(
    stat: &str,
    boot_time: u64,
    ticks: f64,
    page_size: f64,
) -> Option<(f64, f64, f64)> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    // Field numbers of proc(5) minus 3 (pid and comm are gone, and it is 0-based).
    let number = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let cpu = (number(14)? + number(15)?) / ticks;
    let start = boot_time as f64 + number(22)? / ticks;
    let rss = number(24)? * page_size;
    Some((cpu, rss, start))
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let (cpu_seconds, resident_bytes, start_time_seconds) =
        parse_stat(&stat, boot, ticks.max(1) as f64, page.max(1) as f64)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    Some(ProcessStats {
        cpu_seconds,
        resident_bytes,
        open_fds,
        start_time_seconds,
    })
}

#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let build = ConstGauge::new(1_i64);
        let labels = [("version", env!("CARGO_PKG_VERSION"))];
        let mut family = encoder.encode_descriptor(
            "webhook_operator_build_info",
            "The running build: always 1, with its version as a label",
            None,
            build.metric_type(),
        )?;
        build.encode(family.encode_family(&labels)?)?;
        let Some(stats) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stats.resident_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                stats.open_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                stats.start_time_seconds,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_parsed_past_names_with_spaces_and_parens() {
        // proc(5): utime 14, stime 15, starttime 22, rss 24.
        let stat = "4242 (web (hook) op) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 8 0 \
                    50000 123456789 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let (cpu, rss, start) = parse_stat(stat, 1_700_000_000, 100.0, 4096.0).unwrap();
        assert_eq!(cpu, 4.0);
        assert_eq!(rss, 3000.0 * 4096.0);
        assert_eq!(start, 1_700_000_000.0 + 500.0);
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_stat("garbage", 0, 100.0, 4096.0), None);
    }

    #[test]
    fn the_registry_exports_build_info_and_this_process() {
        // Spend some CPU first: a fresh test process may not have used one clock tick yet.
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(60) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = format!(
            "webhook_operator_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&line), "{text}");
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        };
        assert!(value("process_cpu_seconds_total") > 0.0);
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
        let now = jiff::Timestamp::now().as_second() as f64;
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }
}
