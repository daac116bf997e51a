//! Detection of suspicious activity in the security log's stream. Pure: the time of each
//! observation is passed in. Memory is bounded: at most [`MAX_KEYS`] sources or endpoints are
//! tracked per detector (the stalest are forgotten first).
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use super::{SecurityEvent, SecurityKind};

/// Sources or endpoints tracked at most per detector.
pub const MAX_KEYS: usize = 4096;

/// Thresholds.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Authentication failures (401 or 403) from one source within `auth_window` that raise
    /// [`SecurityKind::AuthFailureBurst`].
    pub auth_failures: usize,
    pub auth_window: Duration,
    /// Refused destinations of one endpoint within `refusal_window` that raise
    /// [`SecurityKind::RepeatedRefusals`].
    pub refusals: usize,
    pub refusal_window: Duration,
    /// A destination refused this soon after the endpoint's last successful delivery raises
    /// [`SecurityKind::DnsRebinding`]: its name resolved to an allowed address then, a refused one now.
    pub rebinding_window: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            auth_failures: 10,
            auth_window: Duration::from_secs(60),
            refusals: 5,
            refusal_window: Duration::from_secs(600),
            rebinding_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Counts of recent occurrences per key, with one alert per key per window.
struct Window<K> {
    seen: HashMap<K, VecDeque<Timestamp>>,
    alerted: HashMap<K, Timestamp>,
}

impl<K: std::hash::Hash + Eq + Clone> Window<K> {
    fn new() -> Self {
        Self {
            seen: HashMap::new(),
            alerted: HashMap::new(),
        }
    }

    /// Records one occurrence; true when it makes `threshold` within `window` and no alert was
    /// raised for the key within the window.
    fn hit(&mut self, key: &K, at: Timestamp, threshold: usize, window: Duration) -> bool {
        let since = at.checked_sub(window).unwrap_or(Timestamp::MIN);
        if !self.seen.contains_key(key) && self.seen.len() >= MAX_KEYS {
            forget_stalest(&mut self.seen);
        }
        let times = self.seen.entry(key.clone()).or_default();
        times.push_back(at);
        while times.front().is_some_and(|t| *t <= since) || times.len() > threshold {
            times.pop_front();
        }
        if times.len() < threshold {
            return false;
        }
        if self.alerted.get(key).is_some_and(|last| *last > since) {
            return false;
        }
        if self.alerted.len() >= MAX_KEYS {
            self.alerted.retain(|_, last| *last > since);
        }
        self.alerted.insert(key.clone(), at);
        true
    }
}

fn forget_stalest<K: std::hash::Hash + Eq + Clone>(seen: &mut HashMap<K, VecDeque<Timestamp>>) {
    if let Some(key) = seen
        .iter()
        .min_by_key(|(_, times)| times.back().copied())
        .map(|(k, _)| k.clone())
    {
        seen.remove(&key);
    }
}

type EndpointKey = (String, String);

/// The detectors, fed every security event.
pub struct Detector {
    thresholds: Thresholds,
    auth: Window<String>,
    refusals: Window<EndpointKey>,
    /// Per endpoint, the last success a DNS rebinding alert was raised for (once per success).
    rebinding_alerted: HashMap<EndpointKey, Timestamp>,
}

impl Detector {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            auth: Window::new(),
            refusals: Window::new(),
            rebinding_alerted: HashMap::new(),
        }
    }

    /// The alerts `event` (observed at `at`) raises, if any. `last_success`: for a refused
    /// destination, when its endpoint last delivered successfully (the store keeps it).
    pub fn observe(
        &mut self,
        event: &SecurityEvent,
        at: Timestamp,
        last_success: Option<Timestamp>,
    ) -> Vec<SecurityEvent> {
        let t = self.thresholds;
        let mut alerts = Vec::new();
        match event.kind {
            SecurityKind::AuthenticationFailed | SecurityKind::AccessDenied => {
                let Some(source) = &event.source else {
                    return alerts;
                };
                if self.auth.hit(source, at, t.auth_failures, t.auth_window) {
                    alerts.push(
                        SecurityEvent::new(
                            SecurityKind::AuthFailureBurst,
                            format!(
                                "{} authentication failures (401/403) from {source} within {}",
                                t.auth_failures,
                                humantime::format_duration(t.auth_window)
                            ),
                        )
                        .source(Some(source.clone())),
                    );
                }
            }
            SecurityKind::DestinationRefused => {
                let (Some(namespace), Some(endpoint)) = (&event.namespace, &event.endpoint) else {
                    return alerts;
                };
                let key = (namespace.clone(), endpoint.clone());
                if self.refusals.hit(&key, at, t.refusals, t.refusal_window) {
                    alerts.push(
                        SecurityEvent::new(
                            SecurityKind::RepeatedRefusals,
                            format!(
                                "{} refused destinations for this endpoint within {}",
                                t.refusals,
                                humantime::format_duration(t.refusal_window)
                            ),
                        )
                        .endpoint(namespace, endpoint)
                        .address(event.address.clone()),
                    );
                }
                let since = at.checked_sub(t.rebinding_window).unwrap_or(Timestamp::MIN);
                let recent = last_success.filter(|success| *success > since);
                if let Some(success) =
                    recent.filter(|s| self.rebinding_alerted.get(&key) != Some(s))
                {
                    // Once per success: the next alert needs another success first.
                    if self.rebinding_alerted.len() >= MAX_KEYS {
                        self.rebinding_alerted.clear();
                    }
                    self.rebinding_alerted.insert(key, success);
                    alerts.push(
                        SecurityEvent::new(
                            SecurityKind::DnsRebinding,
                            format!(
                                "the endpoint delivered successfully within {} and now its destination is refused{}: its host now resolves to a refused range (DNS rebinding), or its URL was changed to point at one",
                                humantime::format_duration(t.rebinding_window),
                                event.address.as_deref().map(|a| format!(" ({a})")).unwrap_or_default()
                            ),
                        )
                        .endpoint(namespace, endpoint)
                        .address(event.address.clone()),
                    );
                }
            }
            _ => {}
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn failure(source: &str) -> SecurityEvent {
        SecurityEvent::new(SecurityKind::AuthenticationFailed, "401").source(Some(source.into()))
    }

    fn refused(endpoint: &str) -> SecurityEvent {
        SecurityEvent::new(SecurityKind::DestinationRefused, "refused")
            .endpoint("ns", endpoint)
            .address(Some("10.0.0.1".into()))
    }

    #[test]
    fn a_burst_from_one_source_alerts_once_per_window() {
        let mut detector = Detector::new(Thresholds::default());
        let mut alerts = Vec::new();
        for i in 0..25 {
            alerts.extend(detector.observe(&failure("10.1.1.1"), at(i), None));
        }
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, SecurityKind::AuthFailureBurst);
        assert_eq!(alerts[0].source.as_deref(), Some("10.1.1.1"));
        // After the window, a new burst alerts again.
        let later: usize = (0..10)
            .map(|i| {
                detector
                    .observe(&failure("10.1.1.1"), at(200 + i), None)
                    .len()
            })
            .sum();
        assert_eq!(later, 1);
    }

    #[test]
    fn failures_spread_out_or_from_many_sources_do_not_alert() {
        let mut detector = Detector::new(Thresholds::default());
        let spread: usize = (0..30)
            .map(|i| {
                detector
                    .observe(&failure("10.1.1.1"), at(i * 7), None)
                    .len()
            })
            .sum();
        assert_eq!(spread, 0, "never 10 within 60 s");
        let many: usize = (0..100)
            .map(|i| {
                detector
                    .observe(&failure(&format!("10.2.0.{i}")), at(1000), None)
                    .len()
            })
            .sum();
        assert_eq!(many, 0);
        let unknown: usize = (0..20)
            .map(|_| {
                detector
                    .observe(
                        &SecurityEvent::new(SecurityKind::AuthenticationFailed, "x"),
                        at(2000),
                        None,
                    )
                    .len()
            })
            .sum();
        assert_eq!(unknown, 0, "no source, no burst");
    }

    #[test]
    fn repeated_refusals_of_one_endpoint() {
        let mut detector = Detector::new(Thresholds::default());
        let kinds: Vec<_> = (0..6)
            .flat_map(|i| detector.observe(&refused("crm"), at(i * 60), None))
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, vec![SecurityKind::RepeatedRefusals]);
    }

    #[test]
    fn a_refusal_after_successes_is_dns_rebinding() {
        let mut detector = Detector::new(Thresholds::default());
        assert!(
            detector.observe(&refused("crm"), at(0), None).is_empty(),
            "never delivered: no rebinding"
        );
        let alerts = detector.observe(&refused("crm"), at(200), Some(at(100)));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, SecurityKind::DnsRebinding);
        assert_eq!(alerts[0].address.as_deref(), Some("10.0.0.1"));
        assert!(
            detector
                .observe(&refused("crm"), at(300), Some(at(100)))
                .is_empty(),
            "once per success"
        );
        // A new success counts again; one too long ago does not.
        assert_eq!(
            detector
                .observe(&refused("crm"), at(500), Some(at(400)))
                .len(),
            1
        );
        assert!(detector
            .observe(&refused("crm"), at(400 + 25 * 3600), Some(at(450)))
            .is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let mut detector = Detector::new(Thresholds::default());
        for i in 0..(MAX_KEYS as i64 + 500) {
            detector.observe(&failure(&format!("s{i}")), at(i), None);
            detector.observe(&refused(&format!("e{i}")), at(i), Some(at(i - 1)));
        }
        assert!(detector.auth.seen.len() <= MAX_KEYS);
        assert!(detector.refusals.seen.len() <= MAX_KEYS);
        assert!(detector.rebinding_alerted.len() <= MAX_KEYS);
    }

    proptest::proptest! {
        /// However failures arrive, at most one alert per source per window.
        #[test]
        fn at_most_one_alert_per_window(gaps in proptest::collection::vec(0i64..20, 1..300)) {
            let mut detector = Detector::new(Thresholds::default());
            let mut now = 0;
            let mut alert_times = Vec::new();
            for gap in gaps {
                now += gap;
                if !detector.observe(&failure("s"), at(now), None).is_empty() {
                    alert_times.push(now);
                }
            }
            for pair in alert_times.windows(2) {
                proptest::prop_assert!(pair[1] - pair[0] >= 60);
            }
        }
    }
}
