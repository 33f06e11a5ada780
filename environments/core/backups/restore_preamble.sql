-- Retort: remove what the backup does not hold, so the restore leaves exactly the backup.
SET client_min_messages = warning;
DO $retort$
DECLARE
    statement text;
BEGIN
    FOREACH statement IN ARRAY ARRAY(
        SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', n.nspname)
        FROM pg_catalog.pg_namespace n
        WHERE n.nspname <> 'public' AND n.nspname <> 'information_schema'
          AND n.nspname !~ '^pg_'
          AND pg_catalog.pg_has_role(n.nspowner, 'MEMBER')
          AND NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                AND d.objid = n.oid AND d.deptype = 'e')
        ORDER BY n.nspname
    ) || ARRAY(
        SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                     WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                     ELSE 'TABLE' END,
                      n.nspname, c.relname)
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
          AND pg_catalog.pg_has_role(c.relowner, 'MEMBER')
          AND NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY c.relkind = 'S', c.relname
    ) || ARRAY(
        SELECT format('DROP %s IF EXISTS %I.%I(%s) CASCADE',
                      CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                                     ELSE 'FUNCTION' END,
                      n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid))
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'
          AND pg_catalog.pg_has_role(p.proowner, 'MEMBER')
          AND NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                AND d.objid = p.oid AND d.deptype = 'e')
        ORDER BY p.proname
    ) || ARRAY(
        SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                      CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                      n.nspname, t.typname)
        FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid
        WHERE n.nspname = 'public'
          AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
          AND pg_catalog.pg_has_role(t.typowner, 'MEMBER')
          AND NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                AND d.objid = t.oid AND d.deptype = 'e')
        ORDER BY t.typname
    ) || ARRAY(
        SELECT format('SELECT pg_catalog.lo_unlink(%s)', m.oid)
        FROM pg_catalog.pg_largeobject_metadata m
        WHERE pg_catalog.pg_has_role(m.lomowner, 'MEMBER')
    )
    LOOP
        EXECUTE statement;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'public') THEN
        CREATE SCHEMA public;
    END IF;
END
$retort$;
