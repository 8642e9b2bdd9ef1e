"""Scenarios 2-4: a hostile network, an outage of the whole Box side, and token churn.
Each runs the real daemon subprocess and checks both sides exactly."""

from __future__ import annotations

import json
import random
import threading
import time

from harness import have_all, report, scale, sha1, temporaries, vendor_files, wait_until, write_out

TOKEN = "POST /oauth2/token"


def _workload(s, emulator, rng, n_out, n_in, tag):
    out = {f"{tag}/o{i % 4}/f-{i:04d}.bin": rng.randbytes(rng.randint(1, 60_000)) for i in range(n_out)}
    expected_out = {rel: write_out(s.out, rel, data) for rel, data in out.items()}
    spec = {f"{tag}/back-{i:04d}.jpg": rng.randbytes(rng.randint(1, 60_000)) for i in range(n_in)}
    return expected_out, spec


def _run_until_done(s, emulator, expected_out, spec, timeout):
    """Start the daemon, let the vendor upload `spec`, wait for both sides; seconds taken."""
    t0 = time.monotonic()
    proc = s.start()
    expected_in = vendor_files(emulator, spec)
    wait_until(lambda: len(s.box_out()) >= len(expected_out), timeout, "every outgoing file on Box")
    wait_until(lambda: have_all(s.inc, expected_in), timeout, "every incoming file locally")
    took = time.monotonic() - t0
    time.sleep(2.0)  # duplicates or extra versions would show up now
    assert proc.poll() is None, s.daemon_output()[-3000:]
    assert s.stop(proc) == 0
    s.assert_outgoing_exact(expected_out)
    s.assert_incoming_exact(expected_in)
    assert temporaries(s.inc) == []
    return took


def test_hostile_network_everything_arrives_once(tmp_path, studio, emulator):
    rng = random.Random(7)
    n_out, n_in = scale((20, 10), (300, 150))
    # A clean run first, as the yardstick.
    clean = studio(name="clean", poll_interval="1s")
    exp_out, spec = _workload(clean, emulator, rng, n_out, n_in, "clean")
    emulator.control.reset_counters()
    clean_s = _run_until_done(clean, emulator, exp_out, spec, scale(90, 600))
    clean_calls = emulator.control.counters()["total"]
    # The same amount of work through 10% 500/503, 5% 429 + Retry-After, 2% connections cut
    # mid-body (uploads and downloads alike) and 30 ms latency.  Own Box folders: the clean
    # run's files stay on Box, so the hostile studio (own folders and state) must end with both sets.
    hostile = studio(name="hostile", poll_interval="1s")
    exp_out2, spec2 = _workload(hostile, emulator, rng, n_out, n_in, "hostile")
    emulator.control.reset_counters()
    emulator.control.faults(error_500=0.05, error_503=0.05, rate_429=0.05, retry_after=1, reset=0.02,
                            latency=0.03)
    t0 = time.monotonic()
    proc = hostile.start()
    expected_in = {}
    for rel, data in spec2.items():  # the vendor's uploads go through the control API, not the faults
        expected_in.update(vendor_files(emulator, {rel: data}))
    all_out = {**exp_out, **exp_out2}
    wait_until(lambda: len(hostile.box_out()) >= len(all_out), scale(180, 1200), "every outgoing file on Box")
    wait_until(lambda: have_all(hostile.inc, {**spec, **expected_in}), scale(180, 1200),
               "every incoming file locally")
    hostile_s = time.monotonic() - t0
    time.sleep(2.0)
    counters = emulator.control.counters()
    emulator.control.clear_faults()
    assert hostile.stop(proc) == 0
    hostile.assert_outgoing_exact(all_out)
    # The hostile studio's incoming folder also receives the clean run's returns (same
    # Download folder): exactly both sets, each once.
    clean_in = {rel: sha1(d) for rel, d in spec.items()}
    hostile.assert_incoming_exact({**clean_in, **expected_in})
    assert temporaries(hostile.inc) == []
    report("hostile_network", files_out=n_out, files_in=n_in,
           faults="500 5%, 503 5%, 429 5% (Retry-After 1), reset mid-body 2%, latency 30 ms",
           clean_seconds=round(clean_s, 1), clean_box_calls=clean_calls,
           hostile_seconds=round(hostile_s, 1), hostile_box_calls=counters["total"],
           duplicates=0, lost=0)


def test_outage_daemon_stays_up_pings_watchdog_and_drains_after(studio, emulator):
    rng = random.Random(11)
    outage = scale(6.0, 180.0)
    n_before, n_during = scale((15, 30), (100, 300))
    s = studio(poll_interval="1s")
    notify = s.with_notify()
    expected = {f"before/f-{i:03d}.bin": write_out(s.out, f"before/f-{i:03d}.bin", rng.randbytes(5000))
                for i in range(n_before)}
    proc = s.start()
    wait_until(lambda: notify.times("READY=1"), 60, "READY=1")
    wait_until(lambda: len(s.box_out()) >= n_before, 60, "the first files")
    emulator.stop()
    t_down = time.monotonic()
    for i in range(n_during):
        rel = f"during/f-{i:03d}.bin"
        expected[rel] = write_out(s.out, rel, rng.randbytes(5000))
        time.sleep(outage / n_during / 2)
    time.sleep(max(0.0, outage - (time.monotonic() - t_down)))
    assert proc.poll() is None, "the daemon must stay up while Box is away: " + s.daemon_output()[-2000:]
    pings = [t for t in notify.times("WATCHDOG=1") if t_down <= t]
    gaps = [b - a for a, b in zip([t_down] + pings, pings + [time.monotonic()])]
    status = s.cli("status", "--json")
    assert status.returncode in (0, 1), status.stderr
    st = json.loads(status.stdout)
    out_map = next(m for m in st["mappings"] if m["direction"] == "out")
    queued_during = out_map["queued"] + out_map["active"] + out_map["failed"]
    assert queued_during >= 1, st  # local files were seen and queued while Box was away
    emulator.start()
    t_up = time.monotonic()
    wait_until(lambda: len(s.box_out()) >= len(expected), scale(120, 900), "the queue to drain after the outage")
    drain = time.monotonic() - t_up
    time.sleep(1.5)
    assert s.stop(proc) == 0
    s.assert_outgoing_exact(expected)
    assert max(gaps) < 2.0, f"watchdog gap {max(gaps):.1f} s during the outage (WATCHDOG_USEC=2 s)"
    report("outage", outage_seconds=outage, files_before=n_before, files_during=n_during,
           watchdog_pings_during=len(pings), max_watchdog_gap_s=round(max(gaps), 2),
           queued_in_status_during=queued_during, connection_health=[c["health"] for c in st["connections"]],
           drain_seconds=round(drain, 1), duplicates=0, lost=0)


def test_token_churn_is_transparent(studio, emulator):
    rng = random.Random(13)
    n_out, n_in = scale((60, 30), (300, 150))
    period = 2.0
    emulator.control.settings(token_ttl=period)
    s = studio(poll_interval="1s")
    exp_out, spec = _workload(s, emulator, rng, n_out, n_in, "churn")
    stop = threading.Event()
    expiries = [0]

    def churn():  # on top of the short lifetime, revoke every live token now and then
        while not stop.wait(period * 1.5):
            emulator.control.expire_tokens()
            expiries[0] += 1

    t = threading.Thread(target=churn, daemon=True)
    emulator.control.reset_counters()
    t.start()
    try:
        took = _run_until_done(s, emulator, exp_out, spec, scale(120, 900))
    finally:
        stop.set()
        t.join()
    counters = emulator.control.counters()
    log = s.daemon_output()
    assert "failed" not in {line.split("ACTION=")[-1].split()[0] for line in log.splitlines() if "ACTION=" in line}
    report("token_churn", token_ttl_s=period, forced_expiries=expiries[0], token_grants=counters.get(TOKEN, 0),
           files_out=n_out, files_in=n_in, seconds=round(took, 1), failed=0, duplicates=0, lost=0)
