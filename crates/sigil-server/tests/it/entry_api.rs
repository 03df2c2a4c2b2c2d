//! The admin `Entry` service in process, over a real SQLite datastore: per-item batch
//! results, paging, update and delete, and the index kept in step.

use std::sync::Arc;

use sigil_core::EntryId;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::entry_server::Entry;
use sigil_server::api::EntryApi;
use sigil_server::state::ServerState;
use tonic::{Code, Request};

use crate::support;

struct Fixture {
    api: EntryApi,
    state: Arc<ServerState>,
    _fixture: support::TestState,
}

async fn fixture() -> Fixture {
    let fixture = support::state().await;
    Fixture {
        api: EntryApi::new(Arc::clone(&fixture.state)),
        state: Arc::clone(&fixture.state),
        _fixture: fixture,
    }
}

fn entry(spiffe_id: &str, uid: &str) -> pb::RegistrationEntry {
    pb::RegistrationEntry {
        spiffe_id: spiffe_id.to_owned(),
        parent_id: "spiffe://example.org/sigil/server".to_owned(),
        selectors: vec![pb::Selector {
            r#type: "unix".to_owned(),
            value: format!("uid:{uid}"),
        }],
        ..Default::default()
    }
}

async fn create(api: &EntryApi, entries: Vec<pb::RegistrationEntry>) -> Vec<(i32, String, String)> {
    api.batch_create_entry(Request::new(pb::BatchCreateEntryRequest { entries }))
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| {
            let status = r.status.unwrap();
            (status.code, status.message, r.entry.unwrap().id)
        })
        .collect()
}

#[tokio::test]
async fn batch_create_reports_each_item_and_fills_the_index() {
    let f = fixture().await;
    let mut chosen = entry("spiffe://example.org/b", "2");
    chosen.id = "my-entry".to_owned();
    let results = create(
        &f.api,
        vec![
            entry("spiffe://example.org/a", "1"),
            chosen,
            entry("spiffe://example.org/a", "1"),
            entry("spiffe://other.org/a", "1"),
            entry("not an id", "1"),
        ],
    )
    .await;
    assert_eq!(results[0].0, Code::Ok as i32);
    assert!(!results[0].2.is_empty(), "the server fills in an id");
    assert_eq!(results[1].0, Code::Ok as i32);
    assert_eq!(results[1].2, "my-entry");
    assert_eq!(results[2].0, Code::AlreadyExists as i32);
    assert!(results[2].1.contains(&results[0].2), "{}", results[2].1);
    assert_eq!(results[3].0, Code::InvalidArgument as i32);
    assert!(results[3].1.contains("spiffe_id"), "{}", results[3].1);
    assert_eq!(results[4].0, Code::InvalidArgument as i32);
    assert!(results[4].1.starts_with("spiffe_id"), "{}", results[4].1);

    assert_eq!(f.state.entry_count(), 2);
    assert!(
        f.state
            .entry(&"my-entry".parse::<EntryId>().unwrap())
            .is_some()
    );
}

#[tokio::test]
async fn list_pages_and_filters() {
    let f = fixture().await;
    let entries = (0..5)
        .map(|i| entry(&format!("spiffe://example.org/w{i}"), &i.to_string()))
        .collect();
    create(&f.api, entries).await;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = f
            .api
            .list_entries(Request::new(pb::ListEntriesRequest {
                filter: None,
                page_size: 2,
                page_token,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.into_iter().map(|e| e.spiffe_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    seen.sort();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0], "spiffe://example.org/w0");

    let filtered = f
        .api
        .list_entries(Request::new(pb::ListEntriesRequest {
            filter: Some(pb::list_entries_request::Filter {
                by_selectors: vec![pb::Selector {
                    r#type: "unix".to_owned(),
                    value: "uid:3".to_owned(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.entries.len(), 1);
    assert_eq!(filtered.entries[0].spiffe_id, "spiffe://example.org/w3");

    let bad = f
        .api
        .list_entries(Request::new(pb::ListEntriesRequest {
            page_size: -1,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn update_and_delete_keep_datastore_and_index_in_step() {
    let f = fixture().await;
    let id = create(&f.api, vec![entry("spiffe://example.org/a", "1")]).await[0]
        .2
        .clone();
    let mut stored = f
        .api
        .get_entry(Request::new(pb::GetEntryRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner();
    let created_at = stored.created_at;
    stored.hint = "blue".to_owned();
    stored.created_at = 1;
    let updated = f
        .api
        .batch_update_entry(Request::new(pb::BatchUpdateEntryRequest {
            entries: vec![stored, {
                let mut unknown = entry("spiffe://example.org/z", "9");
                unknown.id = "unknown".to_owned();
                unknown
            }],
        }))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(updated[0].status.as_ref().unwrap().code, Code::Ok as i32);
    let entry_after = updated[0].entry.as_ref().unwrap();
    assert_eq!(entry_after.hint, "blue");
    assert_eq!(entry_after.revision, 2);
    assert_eq!(
        entry_after.created_at, created_at,
        "created_at is the server's"
    );
    assert_eq!(
        updated[1].status.as_ref().unwrap().code,
        Code::NotFound as i32
    );
    let entry_id: EntryId = id.parse().unwrap();
    assert_eq!(f.state.entry(&entry_id).unwrap().hint, "blue");

    let deleted = f
        .api
        .batch_delete_entry(Request::new(pb::BatchDeleteEntryRequest {
            ids: vec![id.clone(), id.clone()],
        }))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(deleted[0].status.as_ref().unwrap().code, Code::Ok as i32);
    assert_eq!(
        deleted[1].status.as_ref().unwrap().code,
        Code::NotFound as i32
    );
    assert_eq!(f.state.entry_count(), 0);
    let gone = f
        .api
        .get_entry(Request::new(pb::GetEntryRequest { id }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn sync_is_not_served_on_the_admin_api() {
    let f = fixture().await;
    let error = f
        .api
        .sync_authorized_entries(Request::new(pb::SyncAuthorizedEntriesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_restarted_state_loads_every_entry_across_pages() {
    let f = fixture().await;
    let count = sigil_server::datastore::MAX_PAGE_SIZE as usize * 2 + 3;
    let entries = (0..count)
        .map(|i| entry(&format!("spiffe://example.org/w{i}"), &i.to_string()))
        .collect::<Vec<_>>();
    for chunk in entries.chunks(500) {
        let results = create(&f.api, chunk.to_vec()).await;
        assert!(results.iter().all(|r| r.0 == Code::Ok as i32));
    }
    // A new state over the same datastore, as a restarted server builds it.
    let reloaded = support::state_on(f.state.datastore().clone()).await;
    assert_eq!(reloaded.entry_count(), count);
}
