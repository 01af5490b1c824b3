"""A normalized, comparable description of everything pggcl installs.

Two databases built different ways (the migration chain, the fresh-install script) must give
equal snapshots. Each kind is one query returning one text line per object, sorted, so that
creation order and oids do not matter but every property that can differ does: definitions,
function bodies and settings (pg_get_functiondef prints volatility, SECURITY DEFINER, STRICT,
PARALLEL, COST and every SET clause), ACLs, owners, comments, and the roles pggcl creates.
"""

from __future__ import annotations

import psycopg

_PGGCL = "'pggcl'::regnamespace"

_QUERIES = {
    "schema": """
        SELECT nspname || ' owner=' || pg_get_userbyid(nspowner)
               || ' acl=' || coalesce(nspacl::text, '') || ' comment='
               || coalesce(obj_description(oid, 'pg_namespace'), '')
        FROM pg_namespace WHERE nspname = 'pggcl'""",
    "relations": f"""
        SELECT c.relname || ' kind=' || c.relkind::text || ' owner=' || pg_get_userbyid(c.relowner)
               || ' persistence=' || c.relpersistence::text
               || ' options=' || coalesce(c.reloptions::text, '')
               || ' rls=' || c.relrowsecurity::text || ',' || c.relforcerowsecurity::text
               || ' replident=' || c.relreplident::text
               || ' acl=' || coalesce(c.relacl::text, '')
               || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
        FROM pg_class c WHERE c.relnamespace = {_PGGCL}""",
    "columns": f"""
        SELECT c.relname || '.'
               -- The column's place among the live ones (not attnum: a column dropped by a
               -- downgrade and added again by the upgrade has a new attnum, in the same place).
               || (SELECT count(*) FROM pg_attribute b WHERE b.attrelid = a.attrelid
                   AND b.attnum > 0 AND NOT b.attisdropped AND b.attnum <= a.attnum)
               || '.' || a.attname || ' '
               || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
               || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
               || ' collation=' || a.attcollation::regcollation::text
               || ' acl=' || coalesce(a.attacl::text, '')
               || ' comment=' || coalesce(col_description(c.oid, a.attnum), '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = {_PGGCL} AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": f"""
        SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
               || ' deferrable=' || condeferrable::text || ',' || condeferred::text
               || ' comment=' || coalesce(obj_description(oid, 'pg_constraint'), '')
        FROM pg_constraint WHERE connamespace = {_PGGCL}""",
    "indexes": """
        SELECT indexdef FROM pg_indexes WHERE schemaname = 'pggcl'""",
    "views": """
        SELECT viewname || ' ' || definition FROM pg_views WHERE schemaname = 'pggcl'""",
    "rules": """
        SELECT tablename || ' ' || rulename || ' ' || definition
        FROM pg_rules WHERE schemaname = 'pggcl'""",
    "functions": f"""
        SELECT CASE WHEN p.prokind = 'a' THEN p.oid::regprocedure::text
                    ELSE pg_get_functiondef(p.oid) END
               || ' owner=' || pg_get_userbyid(p.proowner)
               || ' config=' || coalesce(p.proconfig::text, '')
               || ' acl=' || coalesce(p.proacl::text, '')
               || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
        FROM pg_proc p WHERE p.pronamespace = {_PGGCL}""",
    "triggers": f"""
        SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = {_PGGCL} AND NOT t.tgisinternal""",
    "types": f"""
        SELECT t.typname || ' ' || t.typtype::text || ' owner=' || pg_get_userbyid(t.typowner)
               || ' ' || coalesce((SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
                                   FROM pg_enum WHERE enumtypid = t.oid), '')
               || ' acl=' || coalesce(t.typacl::text, '')
        FROM pg_type t WHERE t.typnamespace = {_PGGCL}""",
    "sequences": """
        SELECT s.sequencename || ' ' || s.data_type::text || ' ' || s.start_value
               || ' ' || coalesce(s.min_value::text, '') || ' ' || coalesce(s.max_value::text, '')
               || ' ' || s.increment_by || ' ' || s.cycle || ' cache=' || s.cache_size
               || ' owned_by=' || coalesce((
                   SELECT d.refobjid::regclass::text || '.' || a.attname
                   FROM pg_depend d
                   JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                   WHERE d.classid = 'pg_class'::regclass
                     AND d.objid = (quote_ident(s.schemaname) || '.'
                                    || quote_ident(s.sequencename))::regclass
                     AND d.deptype IN ('a', 'i')), '')
        FROM pg_sequences s WHERE s.schemaname = 'pggcl'""",
    "default_acls": f"""
        SELECT pg_get_userbyid(defaclrole) || ' ' || defaclobjtype::text || ' '
               || defaclacl::text
        FROM pg_default_acl WHERE defaclnamespace IN (0, {_PGGCL})""",
    # Roles are cluster-wide: pggcl's own, their attributes and who is a member of whom.
    "roles": """
        SELECT r.rolname || ' login=' || r.rolcanlogin::text || ' super=' || r.rolsuper::text
               || ' inherit=' || r.rolinherit::text || ' createrole=' || r.rolcreaterole::text
               || ' createdb=' || r.rolcreatedb::text || ' bypassrls=' || r.rolbypassrls::text
               || ' member_of=' || coalesce((
                   SELECT string_agg(g.rolname || CASE WHEN m.admin_option THEN '*' ELSE '' END,
                                     ',' ORDER BY g.rolname)
                   FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                   WHERE m.member = r.oid), '')
        FROM pg_roles r WHERE r.rolname IN ('pggcl_user', 'pggcl_admin')""",
    # What the pggcl roles may do outside schema pggcl (e.g. a stray grant on the database).
    "database": """
        SELECT 'acl=' || coalesce(datacl::text, '') FROM pg_database
        WHERE datname = current_database() AND datacl::text ~ 'pggcl_'""",
    "extensions": """
        SELECT e.extname FROM pg_extension e WHERE e.extnamespace = 'pggcl'::regnamespace""",
}


def snapshot(dsn: str) -> dict[str, list[str]]:
    """Every object of schema pggcl, by kind, as sorted text lines."""
    with psycopg.connect(dsn) as conn:
        return {
            kind: sorted(str(row[0]) for row in conn.execute(query))
            for kind, query in _QUERIES.items()
        }


def differences(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per kind, the lines found in only one snapshot (`- ` only in a, `+ ` only in b)."""
    out: dict[str, list[str]] = {}
    for kind in a.keys() | b.keys():
        left, right = set(a.get(kind, [])), set(b.get(kind, []))
        lines = [f"- {x}" for x in sorted(left - right)] + [f"+ {x}" for x in sorted(right - left)]
        if lines:
            out[kind] = lines
    return out
