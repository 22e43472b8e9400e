-- The credential store (issue 18). Every secret is in a `sealed` column:
-- age-encrypted exactly as the files backend writes its files, so
-- `age -d -i identity.txt` opens a value copied out of the database. The
-- other columns hold nothing secret: what the refresh scheduler asks about
-- without decrypting anything.

CREATE TABLE outreach_accounts (
    platform     text        NOT NULL,
    account      text        NOT NULL,
    -- The record (tokens, profile, settings), age-encrypted.
    sealed       bytea       NOT NULL,
    -- When the access token expires; NULL for tokens that do not.
    expires_at   timestamptz,
    -- healthy, failing or needs-reconnect.
    state        text        NOT NULL,
    -- When the scheduler next refreshes it (NULL: nothing scheduled).
    next_refresh timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, account),
    CHECK (state IN ('healthy', 'failing', 'needs-reconnect'))
);

CREATE INDEX outreach_accounts_next_refresh
    ON outreach_accounts (next_refresh)
    WHERE next_refresh IS NOT NULL;

-- Secrets of no account (a Mastodon app registration), age-encrypted.
CREATE TABLE outreach_aux (
    name       text        PRIMARY KEY,
    sealed     bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The sealed answer of a single-use token exchange, written by the escrow
-- helper before anyone uses it, applied and removed by the next refresher.
CREATE TABLE outreach_answers (
    platform   text        NOT NULL,
    account    text        NOT NULL,
    sealed     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, account)
);

-- Extra age recipients every value is also encrypted to (public keys:
-- age1…, or an age plugin's recipient), besides the identity's own.
CREATE TABLE outreach_recipients (
    recipient text        PRIMARY KEY,
    added_at  timestamptz NOT NULL DEFAULT now()
);
