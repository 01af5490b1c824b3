#!/usr/bin/env bash
# pggcl-run.sh: hold slots of a pggcl limit while a command runs, with nothing but bash and
# psql (the `flock` of pggcl for hosts without Python; docs/psql-recipe.md).
#
#   PGGCL_DSN=postgresql://... scripts/pggcl-run.sh NAME[,NAME...] [OCCUPY] -- COMMAND [ARGS...]
#
# Environment: PGGCL_DSN (required), PGGCL_TIMEOUT (seconds to wait; empty: no limit),
# PGGCL_GRACE (grace_seconds of the session, default 5). Exit status: the command's; 75 when
# the timeout passed; 69 when the request can never be granted or psql failed; 78 when a
# connection pooler shares psql's server session (PgBouncer in transaction or statement mode).
set -euo pipefail

names=${1:?usage: pggcl-run.sh NAME[,NAME...] [OCCUPY] -- COMMAND...}
shift
occupy=1
if [[ ${1:-} != -- ]]; then occupy=$1; shift; fi
[[ ${1:-} == -- ]] || { echo "pggcl-run.sh: expected -- before the command" >&2; exit 2; }
shift
[[ $# -gt 0 ]] || { echo "pggcl-run.sh: no command" >&2; exit 2; }
[[ $occupy =~ ^[0-9]+$ ]] || { echo "pggcl-run.sh: OCCUPY must be a whole number" >&2; exit 2; }
: "${PGGCL_DSN:?set PGGCL_DSN}"
grace=${PGGCL_GRACE:-5}
timeout=${PGGCL_TIMEOUT:-}

# The session connection: one psql for the whole run. Its connection holds the session's
# liveness lock: if this script dies, psql reads EOF and exits, and the slots come back after
# the grace. -A -t: bare rows, fields separated by |.
coproc PSQL { exec psql "$PGGCL_DSN" -X -q -A -t -F '|' -v ON_ERROR_STOP=1 2>&1; }
to_psql=${PSQL[1]}
from_psql=${PSQL[0]}

# Run one statement; its output lines (rows and notifications) land in OUT.
q() {
    printf '%s\n\\echo __pggcl_end__\n' "$1" >&"$to_psql"
    OUT=()
    local line
    while IFS= read -r line <&"$from_psql"; do
        [[ $line == __pggcl_end__ ]] && return 0
        OUT+=("$line")
    done
    printf 'pggcl-run.sh: psql failed: %s\n' "${OUT[*]}" >&2
    exit 69
}

literal() { printf "'%s'" "${1//\'/\'\'}"; }
array="ARRAY[$(IFS=,; for n in $names; do printf '%s,' "$(literal "$n")"; done | sed 's/,$//')]::text[]"

# The session must have a server session of its own (docs/protocol.md, section 1): the engine
# keeps the session id in a per-connection setting, which must be empty before the open (else
# a pooler handed us another client's server session) and ours after it (else the statements
# landed on different server sessions).
setting="coalesce(current_setting('pggcl.session_id', true), '')"
pooled() {
    echo "pggcl-run.sh: $1: a connection pooler (PgBouncer in transaction or statement mode?) is" \
         "between psql and PostgreSQL; give PGGCL_DSN a direct connection, or use PgBouncer" \
         "with pool_mode = session and server_reset_query = DISCARD ALL" >&2
    exit 78
}
q "SELECT c.carried || '|' || coalesce(s.session_id::text, '') || '|' || coalesce(s.channel, '')
   FROM (SELECT $setting AS carried OFFSET 0) c
   LEFT JOIN LATERAL (SELECT * FROM pggcl.open_session($grace) WHERE c.carried = '') s ON true;"
IFS='|' read -r carried session channel <<<"${OUT[0]}"
[[ -z $carried ]] || pooled "the server session already carries pggcl session $carried"
q "SELECT $setting;"
[[ ${OUT[0]:-} == "$session" ]] || pooled "the server session changed between two statements"
q "LISTEN \"${channel//\"/\"\"}\";"
q "SELECT granted, coalesce(lease_id::text, ''), coalesce(waiter_id::text, '')
   FROM pggcl.acquire($array, $occupy, session_id => $session,
                      holder => $(literal "psql:$(hostname):$$"));"
IFS='|' read -r granted lease waiter <<<"${OUT[0]}"

if [[ $granted != t ]]; then
    # Queued. psql shows notifications after each statement: recheck every half second
    # (recheck also reclaims dead holders and serves the queue: no heartbeat is needed), and
    # take a g:<waiter> seen meanwhile as the grant.
    started=$SECONDS
    while true; do
        q "SELECT 'status|' || status || '|' || $setting FROM pggcl.recheck($waiter, '$lease');"
        status='' kept=''
        for line in "${OUT[@]}"; do  # the row, and the notifications that came meanwhile
            [[ $line == status\|* ]] && IFS='|' read -r _ status kept <<<"$line"
        done
        [[ $kept == "$session" ]] || pooled "the server session changed while waiting"
        for line in "${OUT[@]}"; do
            [[ $line == *"payload \"g:$waiter\""* ]] && status=granted
            [[ $line == *"payload \"e:$waiter:"* ]] && status=rejected
        done
        case $status in
            granted) break ;;
            rejected|gone) echo "pggcl-run.sh: the request for $names can never be granted ($status)" >&2; exit 69 ;;
        esac
        if [[ -n $timeout ]] && (( SECONDS - started >= ${timeout%.*} )); then
            q "SELECT pggcl.cancel($waiter, '$lease');"
            if [[ ${OUT[-1]} == granted ]]; then q "SELECT pggcl.release('$lease');"; fi
            echo "pggcl-run.sh: could not acquire $occupy slot(s) on $names within ${timeout}s" >&2
            exit 75
        fi
        sleep 0.5
    done
fi

# Holding: run the command (without psql's pipes), then give the slots back.
set +e
"$@" {to_psql}>&- {from_psql}<&-
rc=$?
set -e
q "SELECT pggcl.release('$lease');"
q "SELECT pggcl.close_session();"
exit $rc
