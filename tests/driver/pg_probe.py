"""What a libpq driver (psycopg2) is told about its session, for
tests/tests/pg_transparency.rs: run once directly and once through
interlock, the two JSON lines must agree (pids compared within a run).

Usage: python pg_probe.py DSN
"""

import json
import select
import sys
import threading

import psycopg2
import psycopg2.extensions


def main(dsn):
    out = {}
    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.OperationalError as e:
        print(json.dumps({"connect_error": str(e).strip()}))
        return
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("select pg_backend_pid()")
    pid = cur.fetchone()[0]
    out["used_password"] = bool(conn.info.used_password)
    out["pid_agrees"] = pid == conn.info.backend_pid == conn.get_backend_pid()

    # A notification carries the notifying backend's pid.
    cur.execute("listen probe")
    cur.execute("notify probe, 'hello'")
    conn.poll()
    notes = [(n.channel, n.payload, n.pid == pid) for n in conn.notifies]
    out["notifies"] = notes

    # A cancel with the key the client was given reaches the server.
    # (Again and again until the statement ends: one sent before the
    # statement started would be ignored, as the server ignores it.)
    done = threading.Event()

    def cancel_until_done():
        while not done.wait(0.3):
            conn.cancel()

    t = threading.Thread(target=cancel_until_done)
    t.start()
    try:
        cur.execute("select pg_sleep(30)")
        out["cancel"] = "not cancelled"
    except psycopg2.extensions.QueryCanceledError as e:
        out["cancel"] = e.pgcode
    done.set()
    t.join()

    # Terminated by the pid it was told: the client reads the server's FATAL.
    other = psycopg2.connect(dsn)
    other.autocommit = True
    other.cursor().execute("select pg_terminate_backend(%s)", (conn.info.backend_pid,))
    other.close()
    # Wait for the server's word rather than writing into a closed socket
    # (whether libpq then still reads the FATAL is a race, directly too).
    # libpq reads it (and the close) there; the next statement reports it.
    select.select([conn], [], [], 20)
    errors = []
    for step in (conn.poll, lambda: cur.execute("select 1")):
        try:
            step()
        except psycopg2.Error as e:
            errors.append([type(e).__name__, str(e).strip(), e.pgcode])
    out["terminated"] = errors
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
