-- The publishing journal (issue 18): the same rows as the SQLite outbox,
-- shared by every daemon on this database. A delivery is claimed for
-- sending by moving its row to `sending` (owner: the claiming process), in
-- a transaction that skips rows another daemon holds, so a post goes out
-- once whichever daemon sends it. Post text and ids only: nothing secret.

CREATE TABLE outreach_posts (
    id           text        PRIMARY KEY,
    path         text        NOT NULL,
    content_hash text        NOT NULL,
    -- The post file's text, so any daemon can send a scheduled post.
    source       text        NOT NULL,
    scheduled_at timestamptz,
    created_at   timestamptz NOT NULL
);

CREATE INDEX outreach_posts_created ON outreach_posts (created_at);

CREATE TABLE outreach_deliveries (
    post         text        NOT NULL REFERENCES outreach_posts (id),
    target       text        NOT NULL,
    idx          integer     NOT NULL,
    state        text        NOT NULL,
    platform_id  text,
    url          text,
    error_kind   text,
    error        text,
    updated_at   timestamptz NOT NULL,
    -- The process that claimed it, while sending: it holds an advisory lock
    -- on its name while it runs, so a claim whose owner's lock is free was
    -- interrupted.
    owner        text,
    user_retries integer     NOT NULL DEFAULT 0,
    -- Set by a user's retry until the next attempt records it.
    reopened     text,
    PRIMARY KEY (post, target, idx)
);

CREATE INDEX outreach_deliveries_state ON outreach_deliveries (state)
    WHERE state IN ('queued', 'pending', 'sending', 'processing');
CREATE INDEX outreach_deliveries_target ON outreach_deliveries (target, idx, updated_at);

CREATE TABLE outreach_attempts (
    id          bigserial   PRIMARY KEY,
    post        text        NOT NULL,
    target      text        NOT NULL,
    idx         integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text,
    detail      text,
    user_retry  text
);

CREATE INDEX outreach_attempts_delivery ON outreach_attempts (post, target, idx);

-- Accounts saved lately: what each daemon polls for, to schedule the
-- accounts another daemon connected or changed.
CREATE INDEX outreach_accounts_updated ON outreach_accounts (updated_at);
