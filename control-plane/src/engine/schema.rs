//! Versioned schema migrations, applied at start-up under a transaction-scoped advisory lock.

use tokio_postgres::Client;

/// Any fixed number: every control plane takes the same lock, so two starting at once
/// apply migrations one after the other and the second finds nothing to do.
const MIGRATION_LOCK: i64 = 0x6c69_7665_6761_7465; // "livegate"

/// (version, name, SQL). Append only: never edit a migration that has shipped.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "create livegate_keys",
        "CREATE TABLE livegate_keys (
        token       text PRIMARY KEY,
        key_name    text NOT NULL,
        key_alias   text UNIQUE,
        team_id     text,
        user_id     text,
        models      text[] NOT NULL DEFAULT '{}',
        max_budget  double precision,
        metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
        blocked     boolean NOT NULL DEFAULT false,
        spend       double precision NOT NULL DEFAULT 0,
        expires     timestamptz,
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX livegate_keys_team_id ON livegate_keys (team_id);
    CREATE INDEX livegate_keys_user_id ON livegate_keys (user_id);
    CREATE INDEX livegate_keys_created_at ON livegate_keys (created_at DESC, token);",
    ),
    (
        2,
        "versioned key changes",
        // Every write to a key also appends its new state here, in the same statement; the
        // row's seq is the key's version. Control planes read this log to learn changes
        // made through their peers (docs/architecture.md, "Revocation").
        "CREATE TABLE livegate_key_changes (
        seq         bigserial PRIMARY KEY,
        token       text NOT NULL,
        record      jsonb,
        changed_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX livegate_key_changes_changed_at ON livegate_key_changes (changed_at);
    ALTER TABLE livegate_keys ADD COLUMN version bigint NOT NULL DEFAULT 0;",
    ),
    (
        3,
        "teams and key aliases",
        // Keys written before teams existed may name any team_id: each becomes a team of
        // its own, so the foreign key holds and nothing is lost. Reads go through the view,
        // which gives each key its team's policy.
        "CREATE TABLE livegate_teams (
        team_id     text PRIMARY KEY,
        team_alias  text UNIQUE,
        models      text[] NOT NULL DEFAULT '{}',
        metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
        blocked     boolean NOT NULL DEFAULT false,
        spend       double precision NOT NULL DEFAULT 0,
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO livegate_teams (team_id)
        SELECT DISTINCT team_id FROM livegate_keys WHERE team_id IS NOT NULL;
    ALTER TABLE livegate_keys
        ADD CONSTRAINT livegate_keys_team_id_fkey FOREIGN KEY (team_id) REFERENCES livegate_teams (team_id),
        ADD COLUMN aliases jsonb NOT NULL DEFAULT '{}'::jsonb;
    CREATE VIEW livegate_key_policies AS
        SELECT k.token, k.key_name, k.key_alias, k.team_id, k.user_id, k.models, k.aliases,
               k.max_budget, k.metadata, k.blocked, k.spend, k.expires, k.created_at,
               k.updated_at, k.version,
               COALESCE(t.blocked, false) AS team_blocked,
               COALESCE(t.models, '{}'::text[]) AS team_models
        FROM livegate_keys k LEFT JOIN livegate_teams t ON t.team_id = k.team_id;",
    ),
    (
        4,
        "spend logs",
        // One row per request, written by the spend drain; its request_id makes the drain
        // idempotent. team_id is the team the key had when the request was made: no
        // foreign key, a deleted team's rows stay in the ledger.
        "CREATE TABLE livegate_spend_logs (
        request_id        text PRIMARY KEY,
        key_hash          text NOT NULL,
        key_alias         text,
        team_id           text,
        model_requested   text,
        model_returned    text,
        prompt_tokens     bigint,
        completion_tokens bigint,
        total_tokens      bigint,
        cost              double precision NOT NULL DEFAULT 0,
        unpriced          boolean NOT NULL DEFAULT false,
        usage_known       boolean NOT NULL,
        status            integer NOT NULL,
        streamed          boolean NOT NULL,
        start_time        timestamptz NOT NULL,
        end_time          timestamptz NOT NULL,
        inserted_at       timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX livegate_spend_logs_key_hash ON livegate_spend_logs (key_hash, start_time);
    CREATE INDEX livegate_spend_logs_start_time ON livegate_spend_logs (start_time);",
    ),
    (
        5,
        "budgets on keys and teams",
        // budget_duration as given (LiteLLM's string) and in seconds for the reset task;
        // the view gains the new key columns and the team's budget and spend at its end.
        "ALTER TABLE livegate_keys
        ADD COLUMN soft_budget double precision,
        ADD COLUMN budget_duration text,
        ADD COLUMN budget_duration_secs bigint,
        ADD COLUMN budget_reset_at timestamptz;
    ALTER TABLE livegate_teams
        ADD COLUMN max_budget double precision,
        ADD COLUMN soft_budget double precision,
        ADD COLUMN budget_duration text,
        ADD COLUMN budget_duration_secs bigint,
        ADD COLUMN budget_reset_at timestamptz;
    CREATE INDEX livegate_keys_budget_reset_at ON livegate_keys (budget_reset_at)
        WHERE budget_reset_at IS NOT NULL;
    CREATE INDEX livegate_teams_budget_reset_at ON livegate_teams (budget_reset_at)
        WHERE budget_reset_at IS NOT NULL;
    CREATE OR REPLACE VIEW livegate_key_policies AS
        SELECT k.token, k.key_name, k.key_alias, k.team_id, k.user_id, k.models, k.aliases,
               k.max_budget, k.metadata, k.blocked, k.spend, k.expires, k.created_at,
               k.updated_at, k.version,
               COALESCE(t.blocked, false) AS team_blocked,
               COALESCE(t.models, '{}'::text[]) AS team_models,
               k.soft_budget, k.budget_duration, k.budget_reset_at,
               t.max_budget AS team_max_budget,
               COALESCE(t.spend, 0) AS team_spend
        FROM livegate_keys k LEFT JOIN livegate_teams t ON t.team_id = k.team_id;",
    ),
    (
        6,
        "rate limits on keys and teams",
        // A limit's sliding window is one row per scope (`key:<hash>:rpm`, `team:<id>:tpm`):
        // its entries as JSON and a version that control planes compare and swap
        // (docs/architecture.md, "Rate limits"). Unlogged: an admission's write costs no
        // WAL flush; the windows are soft state that a Postgres crash empties (the control
        // planes write back what they know).
        "ALTER TABLE livegate_keys ADD COLUMN rpm_limit bigint, ADD COLUMN tpm_limit bigint,
        ADD COLUMN max_parallel_requests bigint;
    ALTER TABLE livegate_teams ADD COLUMN rpm_limit bigint, ADD COLUMN tpm_limit bigint,
        ADD COLUMN max_parallel_requests bigint;
    CREATE UNLOGGED TABLE livegate_rate_windows (
        scope       text PRIMARY KEY,
        entries     jsonb NOT NULL,
        version     bigint NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE OR REPLACE VIEW livegate_key_policies AS
        SELECT k.token, k.key_name, k.key_alias, k.team_id, k.user_id, k.models, k.aliases,
               k.max_budget, k.metadata, k.blocked, k.spend, k.expires, k.created_at,
               k.updated_at, k.version,
               COALESCE(t.blocked, false) AS team_blocked,
               COALESCE(t.models, '{}'::text[]) AS team_models,
               k.soft_budget, k.budget_duration, k.budget_reset_at,
               t.max_budget AS team_max_budget,
               COALESCE(t.spend, 0) AS team_spend,
               k.rpm_limit, k.tpm_limit, k.max_parallel_requests,
               t.rpm_limit AS team_rpm_limit, t.tpm_limit AS team_tpm_limit,
               t.max_parallel_requests AS team_max_parallel_requests
        FROM livegate_keys k LEFT JOIN livegate_teams t ON t.team_id = k.team_id;",
    ),
    (
        7,
        "spend dead letters and the database identity",
        // Spooled records the drain could not write (Postgres refused their data) or not
        // read: kept here, bytes as spooled, instead of blocking every record behind them
        // (docs/operations.md, "Poison records and dead letters"). The identity is one
        // row the engine writes if absent and reads at every connect: a spool belongs to
        // the database whose identity it carries (docs/operations.md, "The spend ledger").
        "CREATE TABLE livegate_spend_dead_letters (
        request_id  text PRIMARY KEY,
        data        bytea NOT NULL,
        reason      text NOT NULL,
        dead_at     timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE livegate_database_identity (
        singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        id          text NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    );",
    ),
    (
        8,
        "spend log estimate reasons",
        // Why a row's counts are an estimate (contract::EstimateReason's wire name); NULL
        // when usage was stated or nothing was charged.
        "ALTER TABLE livegate_spend_logs ADD COLUMN usage_estimate_reason text;",
    ),
    (
        9,
        "spend log usage details",
        // Of prompt_tokens, those read from and written to the provider's prompt cache;
        // of completion_tokens, those spent reasoning (contract::SpendRecord). NULL when
        // the response did not state them (and on every row older than this migration).
        "ALTER TABLE livegate_spend_logs ADD COLUMN cached_tokens bigint,
        ADD COLUMN reasoning_tokens bigint, ADD COLUMN cache_creation_tokens bigint;",
    ),
    (
        10,
        "team model aliases",
        // A team's `model_aliases`, which its keys carry (after their own) like the rest of
        // the team's policy: the view gains them at its end.
        "ALTER TABLE livegate_teams ADD COLUMN model_aliases jsonb NOT NULL DEFAULT '{}';
    CREATE OR REPLACE VIEW livegate_key_policies AS
        SELECT k.token, k.key_name, k.key_alias, k.team_id, k.user_id, k.models, k.aliases,
               k.max_budget, k.metadata, k.blocked, k.spend, k.expires, k.created_at,
               k.updated_at, k.version,
               COALESCE(t.blocked, false) AS team_blocked,
               COALESCE(t.models, '{}'::text[]) AS team_models,
               k.soft_budget, k.budget_duration, k.budget_reset_at,
               t.max_budget AS team_max_budget,
               COALESCE(t.spend, 0) AS team_spend,
               k.rpm_limit, k.tpm_limit, k.max_parallel_requests,
               t.rpm_limit AS team_rpm_limit, t.tpm_limit AS team_tpm_limit,
               t.max_parallel_requests AS team_max_parallel_requests,
               COALESCE(t.model_aliases, '{}'::jsonb) AS team_model_aliases
        FROM livegate_keys k LEFT JOIN livegate_teams t ON t.team_id = k.team_id;",
    ),
    (
        11,
        "users",
        // LiteLLM's internal users. No foreign key from livegate_keys.user_id: a key may
        // name a user_id no row holds (as before users existed), and then carries no user
        // policy. The view gains the user's policy at its end (`user_*`, NULL or open
        // without a row), as it did the team's.
        "CREATE TABLE livegate_users (
        user_id     text PRIMARY KEY,
        user_email  text UNIQUE,
        user_role   text,
        models      text[] NOT NULL DEFAULT '{}',
        metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
        spend       double precision NOT NULL DEFAULT 0,
        max_budget  double precision,
        soft_budget double precision,
        budget_duration text,
        budget_duration_secs bigint,
        budget_reset_at timestamptz,
        rpm_limit   bigint,
        tpm_limit   bigint,
        max_parallel_requests bigint,
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX livegate_users_created_at ON livegate_users (created_at DESC, user_id);
    CREATE INDEX livegate_users_budget_reset_at ON livegate_users (budget_reset_at)
        WHERE budget_reset_at IS NOT NULL;
    CREATE OR REPLACE VIEW livegate_key_policies AS
        SELECT k.token, k.key_name, k.key_alias, k.team_id, k.user_id, k.models, k.aliases,
               k.max_budget, k.metadata, k.blocked, k.spend, k.expires, k.created_at,
               k.updated_at, k.version,
               COALESCE(t.blocked, false) AS team_blocked,
               COALESCE(t.models, '{}'::text[]) AS team_models,
               k.soft_budget, k.budget_duration, k.budget_reset_at,
               t.max_budget AS team_max_budget,
               COALESCE(t.spend, 0) AS team_spend,
               k.rpm_limit, k.tpm_limit, k.max_parallel_requests,
               t.rpm_limit AS team_rpm_limit, t.tpm_limit AS team_tpm_limit,
               t.max_parallel_requests AS team_max_parallel_requests,
               COALESCE(t.model_aliases, '{}'::jsonb) AS team_model_aliases,
               COALESCE(u.models, '{}'::text[]) AS user_models,
               u.max_budget AS user_max_budget,
               COALESCE(u.spend, 0) AS user_spend,
               u.rpm_limit AS user_rpm_limit, u.tpm_limit AS user_tpm_limit,
               u.max_parallel_requests AS user_max_parallel_requests
        FROM livegate_keys k LEFT JOIN livegate_teams t ON t.team_id = k.team_id
            LEFT JOIN livegate_users u ON u.user_id = k.user_id;",
    ),
    (
        12,
        "team members",
        // LiteLLM's team memberships: a user's role in a team, its budget there and what
        // its keys in that team have spent. Leaving (or the team or the user going) takes
        // the membership with it. A key with both a `team_id` and a `user_id` carries its
        // membership's budget and spend at the view's end (`member_*`, NULL or 0 without one).
        "CREATE TABLE livegate_team_members (
        team_id     text NOT NULL REFERENCES livegate_teams (team_id) ON DELETE CASCADE,
        user_id     text NOT NULL REFERENCES livegate_users (user_id) ON DELETE CASCADE,
        role        text NOT NULL DEFAULT 'user',
        max_budget  double precision,
        spend       double precision NOT NULL DEFAULT 0,
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (team_id, user_id)
    );
    CREATE INDEX livegate_team_members_user_id ON livegate_team_members (user_id);
    CREATE OR REPLACE VIEW livegate_key_policies AS
        SELECT k.token, k.key_name, k.key_alias, k.team_id, k.user_id, k.models, k.aliases,
               k.max_budget, k.metadata, k.blocked, k.spend, k.expires, k.created_at,
               k.updated_at, k.version,
               COALESCE(t.blocked, false) AS team_blocked,
               COALESCE(t.models, '{}'::text[]) AS team_models,
               k.soft_budget, k.budget_duration, k.budget_reset_at,
               t.max_budget AS team_max_budget,
               COALESCE(t.spend, 0) AS team_spend,
               k.rpm_limit, k.tpm_limit, k.max_parallel_requests,
               t.rpm_limit AS team_rpm_limit, t.tpm_limit AS team_tpm_limit,
               t.max_parallel_requests AS team_max_parallel_requests,
               COALESCE(t.model_aliases, '{}'::jsonb) AS team_model_aliases,
               COALESCE(u.models, '{}'::text[]) AS user_models,
               u.max_budget AS user_max_budget,
               COALESCE(u.spend, 0) AS user_spend,
               u.rpm_limit AS user_rpm_limit, u.tpm_limit AS user_tpm_limit,
               u.max_parallel_requests AS user_max_parallel_requests,
               m.max_budget AS member_max_budget,
               COALESCE(m.spend, 0) AS member_spend
        FROM livegate_keys k LEFT JOIN livegate_teams t ON t.team_id = k.team_id
            LEFT JOIN livegate_users u ON u.user_id = k.user_id
            LEFT JOIN livegate_team_members m ON m.team_id = k.team_id AND m.user_id = k.user_id;",
    ),
    (
        13,
        "key rotation grace",
        // A regenerated key's old secret (its hash, `token`) during its grace period: it
        // reads as the key now under `key_token`, expiring at `revoke_at`
        // (docs/operations.md, "Key rotation"). The trigger copies every change logged for
        // a key to its old secrets still in grace, so a block, a delete, a team's or a
        // budget's change reaches them through the same feed as the key; `ended` marks an
        // old secret whose tombstone is logged. Rows stay 30 days after that: spend
        // recorded under an old secret (spooled before the rotation, or by a filter late)
        // still reaches its key.
        "CREATE TABLE livegate_key_grace (
        token       text PRIMARY KEY,
        key_token   text NOT NULL,
        revoke_at   timestamptz NOT NULL,
        ended       boolean NOT NULL DEFAULT false,
        created_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX livegate_key_grace_key_token ON livegate_key_grace (key_token);
    CREATE INDEX livegate_key_grace_open ON livegate_key_grace (revoke_at) WHERE NOT ended;
    CREATE FUNCTION livegate_key_grace_fanout() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO livegate_key_changes (token, record)
        SELECT g.token, CASE WHEN NEW.record IS NULL THEN NULL ELSE jsonb_set(NEW.record,
                   '{expires}', to_jsonb(LEAST((NEW.record->>'expires')::timestamptz, g.revoke_at)))
               END
        FROM livegate_key_grace g
        WHERE g.key_token = NEW.token AND NOT g.ended AND g.revoke_at > now();
        RETURN NULL;
    END $$;
    CREATE TRIGGER livegate_key_grace_fanout AFTER INSERT ON livegate_key_changes
        FOR EACH ROW EXECUTE FUNCTION livegate_key_grace_fanout();",
    ),
    (
        14,
        "spend deployment",
        // The deployment of the model list that answered (after retries and fallbacks).
        "ALTER TABLE livegate_spend_logs ADD COLUMN deployment text;",
    ),
    (
        15,
        "per-model limits",
        // A key's and a team's `model_rpm_limit` and `model_tpm_limit` (`{"gpt-4o": 10}`),
        // and a key's `model_max_budget`; the view gains them at its end, after the members'.
        "ALTER TABLE livegate_keys ADD COLUMN model_rpm_limit jsonb NOT NULL DEFAULT '{}',
        ADD COLUMN model_tpm_limit jsonb NOT NULL DEFAULT '{}',
        ADD COLUMN model_max_budget jsonb NOT NULL DEFAULT '{}';
    ALTER TABLE livegate_teams ADD COLUMN model_rpm_limit jsonb NOT NULL DEFAULT '{}',
        ADD COLUMN model_tpm_limit jsonb NOT NULL DEFAULT '{}';
    CREATE OR REPLACE VIEW livegate_key_policies AS
        SELECT k.token, k.key_name, k.key_alias, k.team_id, k.user_id, k.models, k.aliases,
               k.max_budget, k.metadata, k.blocked, k.spend, k.expires, k.created_at,
               k.updated_at, k.version,
               COALESCE(t.blocked, false) AS team_blocked,
               COALESCE(t.models, '{}'::text[]) AS team_models,
               k.soft_budget, k.budget_duration, k.budget_reset_at,
               t.max_budget AS team_max_budget,
               COALESCE(t.spend, 0) AS team_spend,
               k.rpm_limit, k.tpm_limit, k.max_parallel_requests,
               t.rpm_limit AS team_rpm_limit, t.tpm_limit AS team_tpm_limit,
               t.max_parallel_requests AS team_max_parallel_requests,
               COALESCE(t.model_aliases, '{}'::jsonb) AS team_model_aliases,
               COALESCE(u.models, '{}'::text[]) AS user_models,
               u.max_budget AS user_max_budget,
               COALESCE(u.spend, 0) AS user_spend,
               u.rpm_limit AS user_rpm_limit, u.tpm_limit AS user_tpm_limit,
               u.max_parallel_requests AS user_max_parallel_requests,
               m.max_budget AS member_max_budget,
               COALESCE(m.spend, 0) AS member_spend,
               k.model_rpm_limit, k.model_tpm_limit,
               COALESCE(t.model_rpm_limit, '{}'::jsonb) AS team_model_rpm_limit,
               COALESCE(t.model_tpm_limit, '{}'::jsonb) AS team_model_tpm_limit,
               k.model_max_budget
        FROM livegate_keys k LEFT JOIN livegate_teams t ON t.team_id = k.team_id
            LEFT JOIN livegate_users u ON u.user_id = k.user_id
            LEFT JOIN livegate_team_members m ON m.team_id = k.team_id AND m.user_id = k.user_id;",
    ),
];

/// The database's identity, `<database name>/<id>`: the id written once into
/// `livegate_database_identity` (by whichever control plane gets there first; a row an
/// operator deleted is written anew) and the name of the database connected to.
pub async fn identity(client: &Client) -> Result<String, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO livegate_database_identity (id)
             VALUES (md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text))
             ON CONFLICT (singleton) DO NOTHING",
            &[],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT current_database() || '/' || id FROM livegate_database_identity",
            &[],
        )
        .await?;
    row.try_get(0)
}

/// Applies the missing migrations; returns the versions it applied (empty when up to date).
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS livegate_schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM livegate_schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut done = vec![];
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| !applied.contains(v)) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO livegate_schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        done.push(*version);
    }
    tx.commit().await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn migration_versions_are_unique_and_ascending() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(MIGRATIONS[0].0, 1);
    }
}
