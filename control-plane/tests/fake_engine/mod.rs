//! A fake engine answering the engine protocol from an in-memory map, over `tokio::io::duplex`,
//! and the router built on it: the control plane in-process, without Postgres.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio_util::codec::{FramedRead, FramedWrite};

use livegate_control_plane::cli::{Cli, Command};
use livegate_control_plane::config::Config;
use livegate_control_plane::db::ipc::EngineLink;
use livegate_control_plane::db::protocol::{
    codec, encode, Answer, EngineError, Op, Ready, Request, RequestFrame, ResponseFrame,
};
use livegate_control_plane::db::state::DbStatus;
use livegate_control_plane::db::{Db, Snapshot};
use livegate_control_plane::gate::{Gate, GateSettings};
use livegate_control_plane::http::{metrics_router, router, AppState};
use livegate_control_plane::key_cache::KeyCache;
use livegate_control_plane::ledger::Ledger;
use livegate_control_plane::metrics::Metrics;
use livegate_control_plane::model::keys::KeyHash;
use livegate_control_plane::model::{KeyPage, KeyRecord};

pub const MASTER: &str = "sk-master-test-0123456789abcdef0123456789abcdef";
/// The internal API's token the harness's control plane is configured with.
pub const INTERNAL: &str = "internal-test-0123456789abcdef0123456789abcdef";

/// What is on the other end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fake {
    /// An engine that answers from its map.
    Up,
    /// An engine that reads every request and answers none.
    Stalled,
    /// No engine at all (the supervisor is between engines).
    Away,
}

/// The fake's table of keys, shared with the test.
#[derive(Clone, Default)]
pub struct Store {
    keys: Arc<Mutex<HashMap<KeyHash, KeyRecord>>>,
    stalled: Arc<AtomicBool>,
}

impl Store {
    pub fn len(&self) -> usize {
        self.keys.lock().unwrap().len()
    }

    /// From now on, requests get no answer.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    fn answer(&self, request: Request) -> Result<Answer, EngineError> {
        let mut keys = self.keys.lock().unwrap();
        match request {
            Request::Init(op) => op.answer(&Ready { database: None }),
            Request::Ping(op) => op.answer(&()),
            Request::GetKey(op) => op.answer(&keys.get(&op.token).cloned()),
            Request::InsertKey(op) => {
                let record = op.record.clone();
                if keys.contains_key(&record.token) {
                    return Err(EngineError::Conflict("key".into()));
                }
                let alias = record.key_alias.as_ref();
                if alias.is_some() && keys.values().any(|k| k.key_alias.as_ref() == alias) {
                    return Err(EngineError::Conflict("key_alias".into()));
                }
                let version = next_version(&keys);
                let record = KeyRecord { version, ..record };
                keys.insert(record.token.clone(), record.clone());
                op.answer(&record)
            }
            Request::ListKeys(op) => {
                let filter = &op.filter;
                let matches =
                    |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
                let mut found: Vec<KeyRecord> = keys
                    .values()
                    .filter(|k| matches(&filter.key_alias, &k.key_alias))
                    .filter(|k| matches(&filter.team_id, &k.team_id))
                    .filter(|k| matches(&filter.user_id, &k.user_id))
                    .filter(|k| filter.token.as_ref().is_none_or(|t| *t == k.token))
                    .cloned()
                    .collect();
                found.sort_by_key(|k| std::cmp::Reverse(k.created_at));
                let total = found.len() as u64;
                let skip = (filter.page.saturating_sub(1) * filter.size) as usize;
                op.answer(&KeyPage {
                    keys: found
                        .into_iter()
                        .skip(skip)
                        .take(filter.size as usize)
                        .collect(),
                    total,
                })
            }
            Request::UpdateKey(op) => {
                let version = next_version(&keys);
                let patch = op.patch.clone();
                let record = keys.get_mut(&op.token).map(|k| {
                    k.version = version;
                    if let Some(v) = patch.key_alias {
                        k.key_alias = Some(v);
                    }
                    if let Some(v) = patch.team_id {
                        k.team_id = Some(v);
                    }
                    if let Some(v) = patch.user_id {
                        k.user_id = Some(v);
                    }
                    if let Some(v) = patch.models {
                        k.models = v;
                    }
                    if let Some(v) = patch.aliases {
                        k.aliases = v;
                    }
                    if let Some(v) = patch.metadata {
                        k.metadata = v;
                    }
                    if let Some(v) = patch.blocked {
                        k.blocked = v;
                    }
                    if let Some(v) = patch.expires {
                        k.expires = Some(v);
                    }
                    k.clone()
                });
                op.answer(&record)
            }
            Request::DeleteKeys(op) => {
                let version = next_version(&keys);
                let doomed: Vec<KeyHash> = keys
                    .values()
                    .filter(|k| {
                        op.tokens.contains(&k.token)
                            || k.key_alias.as_ref().is_some_and(|a| op.aliases.contains(a))
                    })
                    .map(|k| k.token.clone())
                    .collect();
                doomed.iter().for_each(|t| {
                    keys.remove(t);
                });
                op.answer(&doomed.into_iter().map(|t| (t, version)).collect())
            }
            // The change log: this fake has no peers, so nothing to learn from it.
            Request::ChangesSince(op) => op.answer(&vec![]),
            Request::LastChange(op) => op.answer(&(next_version(&keys) - 1)),
            Request::PruneChanges(op) => op.answer(&0),
            // Rotation is exercised against a real Postgres (tests/tests/rotation.rs): here
            // no key has an old secret in grace.
            Request::GraceEnd(op) => op.answer(&None),
            // Teams are exercised against a real Postgres (tests/tests/teams.rs).
            other => Err(EngineError::Protocol(format!(
                "the fake engine has no teams: {other:?}"
            ))),
        }
    }
}

/// One more than any version held: versions only grow (deletes included, roughly).
fn next_version(keys: &HashMap<KeyHash, KeyRecord>) -> i64 {
    keys.values().map(|k| k.version).max().unwrap_or(0) + 1
}

async fn serve(io: DuplexStream, store: Store) {
    let (r, w) = tokio::io::split(io);
    let mut requests = FramedRead::new(r, codec());
    let mut answers = FramedWrite::new(w, codec());
    while let Some(Ok(bytes)) = requests.next().await {
        let frame: RequestFrame = serde_json::from_slice(&bytes).unwrap();
        if store.stalled.load(Ordering::SeqCst) {
            continue;
        }
        let result = store.answer(frame.request);
        let out = encode(&ResponseFrame {
            id: frame.id,
            result,
        })
        .unwrap();
        if answers.send(out).await.is_err() {
            return;
        }
    }
}

/// The configuration `serve` would build from these flags (short deadlines for the tests).
pub fn config() -> Config {
    let argv = [
        "livegate-control-plane",
        "serve",
        "--database-url",
        "postgres://livegate@127.0.0.1:1/livegate",
        "--master-key",
        MASTER,
        "--internal-token",
        INTERNAL,
        "--db-statement-timeout-ms",
        "100",
        "--auth-db-deadline-ms",
        "50",
        "--retry-after-secs",
        "5",
    ];
    let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!("serve parses as serve")
    };
    Config::from_args(*args).unwrap()
}

/// The router over a fake engine, with the handles a test looks at.
pub struct Harness {
    pub app: Router,
    /// The `--metrics-listen` listener's router.
    pub metrics_app: Router,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    _spool_dir: tempfile::TempDir,
}

impl Harness {
    /// The link's tasks and the fake engine are spawned on the caller's runtime; the spend
    /// spool is a fresh file in a directory the harness owns.
    pub async fn start(fake: Fake) -> Harness {
        let spool_dir = tempfile::tempdir().unwrap();
        let mut config = config();
        config.spend.spool.path = spool_dir.path().join("spend.spool");
        let ledger = Ledger::open(&config.spend).await.unwrap();
        let store = Store::default();
        let link = (fake != Fake::Away).then(|| {
            let (ours, theirs) = tokio::io::duplex(1 << 20);
            if fake == Fake::Stalled {
                store.stall();
            }
            tokio::spawn(serve(theirs, store.clone()));
            let (r, w) = tokio::io::split(ours);
            EngineLink::start(r, w, 64)
        });
        let snapshot = Snapshot {
            db: if fake == Fake::Away {
                DbStatus::Disconnected
            } else {
                DbStatus::Connected
            },
            ..Snapshot::default()
        };
        let deadline = config.supervisor.request_deadline;
        let metrics = Arc::new(Metrics::default());
        let db = Db::fixed(link, snapshot, deadline);
        let limiter = livegate_control_plane::rate_limit::Limiter::new(db.clone(), deadline);
        let cache = Arc::new(KeyCache::new(config.cache));
        let gate = Gate::new(
            db.clone(),
            cache.clone(),
            ledger.clone(),
            limiter.clone(),
            metrics.gate.clone(),
            GateSettings {
                db_deadline: config.auth_db_deadline,
                cache_ttl: config.auth_cache_ttl,
                when_full: config.spend.when_full,
            },
        );
        let state = AppState {
            gate,
            limiter,
            cache,
            changes: Arc::new(livegate_control_plane::feed::ChangeRing::default()),
            config: Arc::new(config),
            db,
            metrics: metrics.clone(),
            ledger,
        };
        assert!(deadline < Duration::from_secs(5), "{deadline:?}");
        Harness {
            metrics_app: metrics_router(state.clone()),
            app: router(state),
            store,
            metrics,
            _spool_dir: spool_dir,
        }
    }
}
