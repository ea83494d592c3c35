/// The lifecycles in the database: state names are constrained, and every change of an instance's or a
/// node's state must be a move of its lifecycle (`InstanceState.transitions`, `NodeHealth.transitions` in
/// Shared/Core; `StateConstraintTests` checks that this table equals them). A statement that tries another
/// move fails with check_violation and changes nothing. An instance in BackOff keeps its restart count and
/// when it is retried next.
let m0016LifecycleMoves = Migration(
    version: 16, name: "lifecycle: known states, allowed moves, restarts and the next retry",
    sql: """
        ALTER TABLE instances ADD COLUMN restarts integer NOT NULL DEFAULT 0,
                              ADD COLUMN next_retry_at timestamptz;
        ALTER TABLE instances ADD CONSTRAINT instances_state_known CHECK (state IN (
            'Pending', 'Scheduled', 'Starting', 'Running', 'BackOff', 'Succeeded', 'Failed', 'OOMKilled', 'Killed',
            'NeedMigration', 'Terminating', 'Terminated'));
        ALTER TABLE nodes ADD CONSTRAINT nodes_state_known CHECK (state IN ('Ready', 'Suspect', 'Broken'));

        CREATE TABLE lifecycle_moves (
            machine    text NOT NULL,
            from_state text NOT NULL,
            to_state   text NOT NULL,
            event      text NOT NULL,
            PRIMARY KEY (machine, from_state, to_state)
        );
        INSERT INTO lifecycle_moves (machine, from_state, to_state, event) VALUES
            ('instance', 'Pending', 'Scheduled', 'placed'),
            ('instance', 'NeedMigration', 'Scheduled', 'placed'),
            ('instance', 'Scheduled', 'Starting', 'starting'),
            ('instance', 'Running', 'Starting', 'starting'),
            ('instance', 'BackOff', 'Starting', 'starting'),
            ('instance', 'Scheduled', 'Running', 'ran'),
            ('instance', 'Starting', 'Running', 'ran'),
            ('instance', 'BackOff', 'Running', 'ran'),
            ('instance', 'Scheduled', 'BackOff', 'backedOff'),
            ('instance', 'Starting', 'BackOff', 'backedOff'),
            ('instance', 'Running', 'BackOff', 'backedOff'),
            ('instance', 'Scheduled', 'Failed', 'ended'),
            ('instance', 'Starting', 'Failed', 'ended'),
            ('instance', 'Running', 'Failed', 'ended'),
            ('instance', 'BackOff', 'Failed', 'ended'),
            ('instance', 'Scheduled', 'Killed', 'ended'),
            ('instance', 'Starting', 'Killed', 'ended'),
            ('instance', 'Running', 'Killed', 'ended'),
            ('instance', 'BackOff', 'Killed', 'ended'),
            ('instance', 'Scheduled', 'OOMKilled', 'ended'),
            ('instance', 'Starting', 'OOMKilled', 'ended'),
            ('instance', 'Running', 'OOMKilled', 'ended'),
            ('instance', 'BackOff', 'OOMKilled', 'ended'),
            ('instance', 'Scheduled', 'Succeeded', 'ended'),
            ('instance', 'Starting', 'Succeeded', 'ended'),
            ('instance', 'Running', 'Succeeded', 'ended'),
            ('instance', 'BackOff', 'Succeeded', 'ended'),
            ('instance', 'Scheduled', 'NeedMigration', 'moved'),
            ('instance', 'Starting', 'NeedMigration', 'moved'),
            ('instance', 'Running', 'NeedMigration', 'moved'),
            ('instance', 'BackOff', 'NeedMigration', 'moved'),
            ('instance', 'Scheduled', 'Terminating', 'stopping'),
            ('instance', 'Starting', 'Terminating', 'stopping'),
            ('instance', 'Running', 'Terminating', 'stopping'),
            ('instance', 'BackOff', 'Terminating', 'stopping'),
            ('instance', 'Pending', 'Terminated', 'removed'),
            ('instance', 'NeedMigration', 'Terminated', 'removed'),
            ('instance', 'Failed', 'Terminated', 'removed'),
            ('instance', 'Killed', 'Terminated', 'removed'),
            ('instance', 'OOMKilled', 'Terminated', 'removed'),
            ('instance', 'Succeeded', 'Terminated', 'removed'),
            ('instance', 'Terminating', 'Terminated', 'stopped'),
            ('node', 'Ready', 'Suspect', 'silence'),
            ('node', 'Ready', 'Broken', 'silence'),
            ('node', 'Suspect', 'Broken', 'silence'),
            ('node', 'Suspect', 'Ready', 'heartbeat'),
            ('node', 'Broken', 'Ready', 'fenced');

        CREATE FUNCTION sigma_check_move() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM lifecycle_moves
                           WHERE machine = TG_ARGV[0] AND from_state = OLD.state AND to_state = NEW.state) THEN
                RAISE EXCEPTION '% %: % → % is not a move of its lifecycle', TG_ARGV[0],
                    to_jsonb(OLD) ->> TG_ARGV[1], OLD.state, NEW.state
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END
        $$;
        CREATE TRIGGER instances_state_move BEFORE UPDATE OF state ON instances
            FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION sigma_check_move('instance', 'id');
        CREATE TRIGGER nodes_state_move BEFORE UPDATE OF state ON nodes
            FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION sigma_check_move('node', 'name');
        """)
