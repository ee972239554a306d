-- Migration 1: the fleet schema (people, templates per recogniser, doors, door groups, grants,
-- revocations, append-only audit) and its two roles. Applied by `facegate fleet migrate` in one
-- transaction; never edit it once released (the migrator refuses a changed file): add a new one.
--
-- Who may do what is enforced here, by PostgreSQL, not by the client:
--   facegate_admin  (NOLOGIN; grant it to the desk's login roles) manages people, templates,
--                   doors, groups, grants and revocations, and reads the audit.
--   facegate_door   (NOLOGIN; every door's login role is a member, made by `fleet door add`)
--                   reads only the people and templates granted to its own door groups (valid
--                   now, not revoked) and only INSERTs audit rows for itself.
-- Nobody UPDATEs, DELETEs or TRUNCATEs the audit (no grant, and a trigger for the owner too).

DO $$
BEGIN
    -- Roles are cluster-wide: another database of the cluster may have made them already.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'facegate_admin') THEN
        CREATE ROLE facegate_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'facegate_door') THEN
        CREATE ROLE facegate_door NOLOGIN;
    END IF;
END
$$;

-- Nothing in the schema for anyone by default (PUBLIC can create in `public`, not here).
REVOKE ALL ON SCHEMA fleet FROM PUBLIC;
GRANT USAGE ON SCHEMA fleet TO facegate_admin, facegate_door;

-- The change number: every change to what a door may see takes a new value (statement
-- triggers below), so a door compares one number to know whether to look again.
CREATE SEQUENCE fleet.change_no;

CREATE TABLE fleet.people (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The same rule as a local user name (store::validate_user_name, checked by the client);
    -- here only what the server can check cheaply.
    name text NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 64 AND name !~ '[[:space:][:cntrl:]/]'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A template is only valid for the recogniser FILE it came from (model_id = that file's
-- integrity digest, `sha256:<hex>`, as in the local store): a door pulls only its own model's.
CREATE TABLE fleet.templates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    person_id bigint NOT NULL REFERENCES fleet.people ON DELETE CASCADE,
    model_id text NOT NULL CHECK (char_length(model_id) BETWEEN 1 AND 256),
    dim integer NOT NULL CHECK (dim BETWEEN 1 AND 4096),
    -- dim little-endian f32, L2-normalised (checked by the client on both sides).
    embedding bytea NOT NULL CHECK (octet_length(embedding) = 4 * dim),
    enrolled_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX templates_person_model ON fleet.templates (person_id, model_id);

CREATE TABLE fleet.doors (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_]{0,39}$'),
    -- The login role this door connects as (`facegate_door_<name>`).
    db_role name NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fleet.door_groups (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fleet.door_group_members (
    group_id bigint NOT NULL REFERENCES fleet.door_groups ON DELETE CASCADE,
    door_id bigint NOT NULL REFERENCES fleet.doors ON DELETE CASCADE,
    PRIMARY KEY (group_id, door_id)
);

-- A person may open the doors of a group between valid_from and valid_until (open-ended when
-- NULL), unless a later revocation (higher change number) covers the grant.
CREATE TABLE fleet.grants (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    person_id bigint NOT NULL REFERENCES fleet.people ON DELETE CASCADE,
    group_id bigint NOT NULL REFERENCES fleet.door_groups ON DELETE CASCADE,
    valid_from timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz,
    granted_at timestamptz NOT NULL DEFAULT now(),
    change_no bigint NOT NULL DEFAULT nextval('fleet.change_no'),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE INDEX grants_group ON fleet.grants (group_id);

-- Revokes every grant of the person given before it: for one group, or every door (NULL).
-- Kept, not deleted, so the history says who was revoked when and why; a later grant opens
-- again.
CREATE TABLE fleet.revocations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    person_id bigint NOT NULL REFERENCES fleet.people ON DELETE CASCADE,
    group_id bigint REFERENCES fleet.door_groups ON DELETE CASCADE,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    reason text NOT NULL DEFAULT '' CHECK (char_length(reason) <= 500),
    change_no bigint NOT NULL DEFAULT nextval('fleet.change_no')
);
CREATE INDEX revocations_person ON fleet.revocations (person_id);

-- One row per decision of a door. Never an image or an embedding: who, where, when, how sure.
-- decided_at is the door's clock, received_at the centre's (clock skew stays visible).
-- (door_id, event_key) is the idempotency key: a door re-sending an event after a lost reply
-- inserts nothing the second time.
CREATE TABLE fleet.audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    door_id bigint NOT NULL REFERENCES fleet.doors,
    event_key text NOT NULL CHECK (char_length(event_key) BETWEEN 1 AND 64),
    decided_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    person text CHECK (char_length(person) <= 64),
    decision text NOT NULL CHECK (char_length(decision) BETWEEN 1 AND 32),
    score real,
    live_score real,
    reason text NOT NULL DEFAULT '' CHECK (char_length(reason) <= 500),
    UNIQUE (door_id, event_key)
);

CREATE FUNCTION fleet.audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'fleet.audit is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON fleet.audit
    FOR EACH ROW EXECUTE FUNCTION fleet.audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON fleet.audit
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.audit_append_only();

-- Every change to what doors may see takes a new change number.
CREATE FUNCTION fleet.bump_change_no() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM nextval('fleet.change_no');
    RETURN NULL;
END
$$;
CREATE TRIGGER people_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fleet.people
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.bump_change_no();
CREATE TRIGGER templates_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fleet.templates
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.bump_change_no();
CREATE TRIGGER doors_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fleet.doors
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.bump_change_no();
CREATE TRIGGER members_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fleet.door_group_members
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.bump_change_no();
CREATE TRIGGER grants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fleet.grants
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.bump_change_no();
CREATE TRIGGER revocations_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fleet.revocations
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.bump_change_no();

-- The door the session's login role is (NULL for anyone else). session_user, not
-- current_user: inside a SECURITY DEFINER function current_user is the owner, and a door
-- that SET ROLEs stays the door it logged in as.
CREATE FUNCTION fleet.my_door_id() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT id FROM fleet.doors WHERE db_role = session_user
$$;

-- The people the session's door may let in now: granted to one of its groups, within the
-- grant's validity (the centre's clock), and not revoked after the grant. A SECURITY DEFINER
-- function so the door needs no access to doors, groups, grants or revocations themselves.
CREATE FUNCTION fleet.door_people() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT DISTINCT g.person_id
    FROM fleet.grants g
    JOIN fleet.door_group_members m ON m.group_id = g.group_id
    JOIN fleet.doors d ON d.id = m.door_id
    WHERE d.db_role = session_user
      AND g.valid_from <= now()
      AND (g.valid_until IS NULL OR now() < g.valid_until)
      AND NOT EXISTS (
          SELECT 1 FROM fleet.revocations r
          WHERE r.person_id = g.person_id
            AND (r.group_id IS NULL OR r.group_id = g.group_id)
            AND r.change_no > g.change_no)
$$;

-- What a door compares before pulling: the change number, and a digest of the set it would
-- pull for its model (which also moves when a grant's validity starts or ends, a change no
-- statement makes). Plus the next time validity alone will change the set, so a door knows
-- when to look again without any change.
CREATE FUNCTION fleet.door_state(model text,
    OUT change_no bigint, OUT digest text, OUT people bigint, OUT templates bigint,
    OUT next_boundary timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT last_value FROM fleet.change_no),
           md5(coalesce(string_agg(t.id::text || ':' || p.name, ',' ORDER BY t.id), '')),
           count(DISTINCT t.person_id),
           count(t.id),
           (SELECT min(b) FROM (
                SELECT g.valid_from AS b FROM fleet.grants g
                  JOIN fleet.door_group_members m ON m.group_id = g.group_id
                  JOIN fleet.doors d ON d.id = m.door_id AND d.db_role = session_user
                  WHERE g.valid_from > now()
                UNION ALL
                SELECT g.valid_until FROM fleet.grants g
                  JOIN fleet.door_group_members m ON m.group_id = g.group_id
                  JOIN fleet.doors d ON d.id = m.door_id AND d.db_role = session_user
                  WHERE g.valid_until > now()) bounds)
    FROM fleet.templates t
    JOIN fleet.people p ON p.id = t.person_id
    WHERE t.model_id = model
      AND t.person_id IN (SELECT fleet.door_people())
$$;

REVOKE ALL ON FUNCTION fleet.my_door_id(), fleet.door_people(), fleet.door_state(text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet.my_door_id(), fleet.door_people(), fleet.door_state(text)
    TO facegate_door, facegate_admin;

-- The audit's door is the session's door unless said otherwise (and the policy below
-- refuses otherwise).
ALTER TABLE fleet.audit ALTER COLUMN door_id SET DEFAULT fleet.my_door_id();

-- Row-level security: what each role sees and may write, row by row.
ALTER TABLE fleet.people ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.audit ENABLE ROW LEVEL SECURITY;

CREATE POLICY admin_all ON fleet.people TO facegate_admin USING (true) WITH CHECK (true);
CREATE POLICY admin_all ON fleet.templates TO facegate_admin USING (true) WITH CHECK (true);
CREATE POLICY admin_reads ON fleet.audit FOR SELECT TO facegate_admin USING (true);

CREATE POLICY door_reads_granted ON fleet.people FOR SELECT TO facegate_door
    USING (id IN (SELECT fleet.door_people()));
CREATE POLICY door_reads_granted ON fleet.templates FOR SELECT TO facegate_door
    USING (person_id IN (SELECT fleet.door_people()));
CREATE POLICY door_inserts_own ON fleet.audit FOR INSERT TO facegate_door
    WITH CHECK (door_id = fleet.my_door_id());
CREATE POLICY door_sees_own_keys ON fleet.audit FOR SELECT TO facegate_door
    USING (door_id = fleet.my_door_id());

-- Table privileges (RLS filters rows within these; no grant, no access at all).
GRANT SELECT, INSERT, UPDATE, DELETE ON fleet.people, fleet.templates, fleet.doors,
    fleet.door_groups, fleet.door_group_members, fleet.grants, fleet.revocations
    TO facegate_admin;
GRANT SELECT ON fleet.audit TO facegate_admin;
GRANT USAGE ON SEQUENCE fleet.change_no TO facegate_admin;

GRANT SELECT ON fleet.schema_version TO facegate_admin, facegate_door;

GRANT SELECT (id, name) ON fleet.people TO facegate_door;
GRANT SELECT (id, person_id, model_id, dim, embedding) ON fleet.templates TO facegate_door;
GRANT INSERT (door_id, event_key, decided_at, person, decision, score, live_score, reason)
    ON fleet.audit TO facegate_door;
-- INSERT … ON CONFLICT (door_id, event_key) DO NOTHING (the idempotent delivery) needs SELECT
-- on the key's columns, and the new row must pass a SELECT policy: a door may see which of
-- its own event keys arrived, nothing else of the audit.
GRANT SELECT (door_id, event_key) ON fleet.audit TO facegate_door;
