"""A normalized, comparable description of everything in schema pggcl."""

from __future__ import annotations

import psycopg

# Each query returns one text column per object; sorted so creation order does not matter.
_QUERIES = {
    "schema": """
        SELECT nspname || ' acl=' || coalesce(nspacl::text, '') || ' comment='
               || coalesce(obj_description(oid, 'pg_namespace'), '')
        FROM pg_namespace WHERE nspname = 'pggcl'""",
    "relations": """
        SELECT c.relname || ' kind=' || c.relkind::text || ' acl=' || coalesce(c.relacl::text, '')
               || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
        FROM pg_class c WHERE c.relnamespace = 'pggcl'::regnamespace""",
    "columns": """
        SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
               || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
               || ' comment=' || coalesce(col_description(c.oid, a.attnum), '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'pggcl'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'pggcl'::regnamespace""",
    "indexes": """
        SELECT indexdef FROM pg_indexes WHERE schemaname = 'pggcl'""",
    "views": """
        SELECT viewname || ' ' || definition FROM pg_views WHERE schemaname = 'pggcl'""",
    "functions": """
        SELECT CASE WHEN p.prokind = 'a' THEN p.oid::regprocedure::text
                    ELSE pg_get_functiondef(p.oid) END
               || ' acl=' || coalesce(p.proacl::text, '')
               || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
        FROM pg_proc p WHERE p.pronamespace = 'pggcl'::regnamespace""",
    "triggers": """
        SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = 'pggcl'::regnamespace AND NOT t.tgisinternal""",
    "types": """
        SELECT t.typname || ' ' || t.typtype::text || ' '
               || coalesce((SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
                            FROM pg_enum WHERE enumtypid = t.oid), '')
        FROM pg_type t WHERE t.typnamespace = 'pggcl'::regnamespace""",
    "sequences": """
        SELECT sequencename || ' ' || data_type::text || ' ' || start_value || ' '
               || increment_by || ' ' || cycle
        FROM pg_sequences WHERE schemaname = 'pggcl'""",
}


def snapshot(dsn: str) -> dict[str, list[str]]:
    """Every object of schema pggcl, by kind, as sorted text lines."""
    with psycopg.connect(dsn) as conn:
        return {
            kind: sorted(str(row[0]) for row in conn.execute(query))
            for kind, query in _QUERIES.items()
        }
