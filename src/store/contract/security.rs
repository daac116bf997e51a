//! The security log (append, read by namespace and kind, pages, retention) and the event search.
use std::collections::HashSet;

use super::{at, event, names, Harness};
use crate::security::{SecurityEvent, SecurityKind};
use crate::store::{EventQuery, EventTypePattern, PageRequest, Result, SecurityQuery};

fn entry(kind: SecurityKind, namespace: Option<&str>, n: i64) -> SecurityEvent {
    SecurityEvent {
        kind,
        namespace: namespace.map(str::to_owned),
        endpoint: namespace.map(|_| format!("ep{n}")),
        source: Some(format!("10.0.0.{n}")),
        user: (n % 2 == 0).then(|| "alice".to_owned()),
        address: (kind == SecurityKind::DestinationRefused).then(|| "169.254.169.254".to_owned()),
        detail: format!("entry {n}"),
    }
}

/// Entries come back newest first, exactly as written, filtered by namespace and kind, in pages
/// without overlap; entries of no namespace only in the unfiltered read; purge drops old ones.
pub async fn security_log<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    let mut written = Vec::new();
    for n in 0..12 {
        let (kind, namespace) = match n % 3 {
            0 => (SecurityKind::DestinationRefused, Some("shop")),
            1 => (SecurityKind::AccessDenied, Some("crm")),
            _ => (SecurityKind::AuthenticationFailed, None),
        };
        written.push((at(n), entry(kind, namespace, n)));
    }
    // Two batches; the same second twice (ties are broken by id).
    store.record_security_events(written[..6].to_vec()).await?;
    store.record_security_events(written[6..].to_vec()).await?;
    store
        .record_security_events(vec![(
            at(11),
            entry(SecurityKind::TestDelivery, Some("shop"), 99),
        )])
        .await?;

    let all = store
        .security_events(SecurityQuery {
            page: PageRequest::first(100),
            ..SecurityQuery::default()
        })
        .await?;
    assert_eq!(
        all.items.len(),
        13,
        "every entry, those of no namespace included"
    );
    assert!(all.next_cursor.is_none());
    assert_eq!(
        all.items[0].event.detail, "entry 99",
        "newest first, ties by id"
    );
    let last = all.items.last().unwrap();
    assert_eq!(last.at, at(0));
    assert_eq!(last.event, written[0].1, "stored exactly as written");
    assert!(all
        .items
        .windows(2)
        .all(|w| (w[0].at, w[0].id) > (w[1].at, w[1].id)));

    let shop = store
        .security_events(SecurityQuery {
            namespace: Some("shop".into()),
            kinds: vec![],
            page: PageRequest::first(100),
        })
        .await?;
    assert_eq!(shop.items.len(), 5);
    assert!(shop
        .items
        .iter()
        .all(|r| r.event.namespace.as_deref() == Some("shop")));

    let refused = store
        .security_events(SecurityQuery {
            namespace: Some("shop".into()),
            kinds: vec![SecurityKind::DestinationRefused],
            page: PageRequest::first(100),
        })
        .await?;
    assert_eq!(refused.items.len(), 4);
    assert!(refused
        .items
        .iter()
        .all(|r| r.event.address.as_deref() == Some("169.254.169.254")));
    let two_kinds = store
        .security_events(SecurityQuery {
            namespace: None,
            kinds: vec![
                SecurityKind::AccessDenied,
                SecurityKind::AuthenticationFailed,
            ],
            page: PageRequest::first(100),
        })
        .await?;
    assert_eq!(two_kinds.items.len(), 8);

    // Pages of 5: no overlap, nothing missed.
    let mut seen = HashSet::new();
    let mut cursor = None;
    loop {
        let page = store
            .security_events(SecurityQuery {
                page: PageRequest::after(cursor, 5),
                ..SecurityQuery::default()
            })
            .await?;
        assert!(page.items.len() <= 5);
        for r in &page.items {
            assert!(seen.insert(r.id), "entry {} on two pages", r.id);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 13);

    // Retention.
    assert_eq!(store.purge_security_events(at(6)).await?, 6);
    let kept = store
        .security_events(SecurityQuery {
            page: PageRequest::first(100),
            ..SecurityQuery::default()
        })
        .await?;
    assert_eq!(kept.items.len(), 7);
    assert!(kept.items.iter().all(|r| r.at >= at(6)));

    // It survives a restart.
    drop(store);
    let store = harness.open().await?;
    let again = store
        .security_events(SecurityQuery {
            page: PageRequest::first(100),
            ..SecurityQuery::default()
        })
        .await?;
    assert_eq!(again.items, kept.items);
    Ok(())
}

/// Events of a namespace by type pattern (exact, `prefix.*`, `*`), newest first, paged.
pub async fn event_search<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    let types = [
        "user.created",
        "user.deleted",
        "pitch.published",
        "user_x.created",
    ];
    for i in 0..12 {
        store
            .enqueue(
                event(&format!("evt_{i:02}"), types[i as usize % 4], i / 2),
                names(&["a"]),
            )
            .await?;
    }
    let mut other = event("evt_other", "user.created", 50);
    other.namespace = "elsewhere".into();
    store.enqueue(other, names(&["a"])).await?;

    let find = |pattern: &str, cursor: Option<String>, limit: usize| EventQuery {
        namespace: "ns".into(),
        event_type: EventTypePattern::parse(pattern),
        page: PageRequest::after(cursor, limit),
    };
    let users = store.find_events(find("user.*", None, 100)).await?;
    let ids: Vec<_> = users.items.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["evt_09", "evt_08", "evt_05", "evt_04", "evt_01", "evt_00"],
        "user.* is not user_x.*; newest first, ties by id"
    );
    let exact = store.find_events(find("user.created", None, 100)).await?;
    assert_eq!(exact.items.len(), 3);
    assert!(exact
        .items
        .iter()
        .all(|e| e.event_type == "user.created" && e.namespace == "ns"));
    let all = store.find_events(find("*", None, 100)).await?;
    assert_eq!(all.items.len(), 12, "not the other namespace's");

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.find_events(find("*", cursor, 5)).await?;
        seen.extend(page.items.into_iter().map(|e| e.event_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<_> = all.items.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(seen, expected, "pages in order, no overlap");
    assert!(store
        .find_events(EventQuery {
            namespace: "ns".into(),
            event_type: EventTypePattern::Any,
            page: PageRequest::after(Some("garbage".into()), 5),
        })
        .await
        .is_err());
    Ok(())
}
