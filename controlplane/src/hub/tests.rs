//! What a fleet's watch does to the cores' feeds: deltas numbered by
//! revision, `Rebase` across revisions without table changes.

use super::*;
use crate::model::TokenEntry;

fn tunnel(name: &str, version: u64) -> TunnelEntry {
    crate::model::sample_tunnel(name, &[&format!("{name}.test")], version)
}

fn drain(feed: &mut mpsc::UnboundedReceiver<Arc<Vec<u8>>>) -> Vec<Record> {
    let mut out = Vec::new();
    while let Ok(b) = feed.try_recv() {
        out.push(Record::decode(&b).unwrap());
    }
    out
}

#[tokio::test]
async fn revisions_become_deltas_and_rebases() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("s.db")).unwrap());
    let (hub, mut feeds) = Hub::start(Backend::File(store), Loaded::default(), 1, None).unwrap();
    let feed = &mut feeds[0];

    // Revision 5 after 0: a Rebase to 4, then the delta at 5.
    hub.apply_revisions(vec![(5, vec![Change::PutTunnel(tunnel("a", 5))])]);
    let got = drain(feed);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0],
        Record {
            seq: 4,
            body: Body::Rebase { from: 0 }
        }
    );
    assert!(matches!(&got[1], Record { seq: 5, body: Body::TunnelUpsert(t) } if t.name == "a"));

    // Consecutive: no Rebase. A revoke of an unknown token: a Rebase only.
    hub.apply_revisions(vec![
        (6, vec![Change::DelTunnel("a".into())]),
        (9, vec![Change::DelToken("tok_unknown".into())]),
    ]);
    let got = drain(feed);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].seq, 6);
    assert_eq!(
        got[1],
        Record {
            seq: 9,
            body: Body::Rebase { from: 6 }
        }
    );

    // Stale revisions are skipped; two table changes in one revision send
    // nothing (the cores get a snapshot instead) but the state has both.
    let token = TokenEntry {
        id: "tok_1".into(),
        name: String::new(),
        sha256: [7; 32],
        tunnels: vec![],
        expires_at: 0,
        created_at: 1,
    };
    hub.apply_revisions(vec![
        (8, vec![Change::PutTunnel(tunnel("stale", 8))]),
        (
            12,
            vec![Change::PutTunnel(tunnel("b", 12)), Change::PutToken(token)],
        ),
    ]);
    assert!(drain(feed).is_empty());
    hub.read(|st| {
        assert_eq!(st.version, 12);
        assert!(st.tunnels.contains_key("b") && !st.tunnels.contains_key("stale"));
        assert_eq!(st.tokens.len(), 1);
    });

    // A full read with the same tables at a later revision: a Rebase; with
    // a lower revision (a new etcd cluster): the state follows it.
    let same = hub.read(|st| st.to_loaded());
    assert!(!hub.replace(Loaded {
        version: 20,
        ..same
    }));
    assert_eq!(
        drain(feed),
        [Record {
            seq: 20,
            body: Body::Rebase { from: 12 }
        }]
    );
    let same = hub.read(|st| st.to_loaded());
    assert!(hub.replace(Loaded { version: 3, ..same }));
    assert_eq!(hub.read(|st| st.version), 3);
}
