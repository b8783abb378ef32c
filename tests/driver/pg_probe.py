"""What a libpq driver (psycopg2) is told about its session, for
tests/tests/pg_transparency.rs: run once directly and once through
interlock, the two JSON lines must agree (pids compared within a run).

Usage: python pg_probe.py DSN
"""

import json
import sys
import threading
import time

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
    def cancel_soon():
        time.sleep(0.5)
        conn.cancel()

    t = threading.Thread(target=cancel_soon)
    t.start()
    try:
        cur.execute("select pg_sleep(30)")
        out["cancel"] = "not cancelled"
    except psycopg2.extensions.QueryCanceledError as e:
        out["cancel"] = e.pgcode
    t.join()

    # Terminated by the pid it was told: the client reads the server's FATAL.
    other = psycopg2.connect(dsn)
    other.autocommit = True
    other.cursor().execute("select pg_terminate_backend(%s)", (conn.info.backend_pid,))
    other.close()
    try:
        cur.execute("select 1")
        out["terminated"] = "still alive"
    except psycopg2.OperationalError as e:
        out["terminated"] = [str(e).strip(), e.pgcode]
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
