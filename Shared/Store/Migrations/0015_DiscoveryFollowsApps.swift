/// Discovery follows apps as well as their instances: creating, deleting (or re-creating) and removing an app
/// bumps its discovery revision, so every replica drops a deleted app at once — also one scaled to 0 before,
/// whose delete changes no instance — and its blocking queries wake with NOT_FOUND.
let m0015DiscoveryFollowsApps = Migration(
    version: 15, name: "discovery: app creation and deletion bump the app's revision",
    sql: """
        CREATE FUNCTION sigma_apps_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                PERFORM sigma_bump_discovery(ARRAY[OLD.name]);
            ELSIF TG_OP = 'INSERT' OR OLD.deleted IS DISTINCT FROM NEW.deleted THEN
                PERFORM sigma_bump_discovery(ARRAY[NEW.name]);
            END IF;
            RETURN NULL;
        END
        $$;

        CREATE TRIGGER apps_discovery AFTER INSERT OR DELETE OR UPDATE OF deleted ON apps
            FOR EACH ROW EXECUTE FUNCTION sigma_apps_changed();
        """)
