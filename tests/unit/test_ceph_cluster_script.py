"""scripts/ceph-cluster without a cluster: a start that cannot claim its directory leaves what is there alone;
bad arguments and a directory without zones get a clear error, never a traceback."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ceph-cluster"


def test_start_into_a_running_clusters_directory_stops_nothing(tmp_path):
    cluster = tmp_path / "cluster"
    (cluster / "run").mkdir(parents=True)
    (cluster / ".ceph-cluster").write_text("1\n")
    # Stands for a daemon of that cluster: stop() would kill it (its command line names DIR/ceph.conf).
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(cluster / "ceph.conf")])
    try:
        (cluster / "run" / "osd.0.pid").write_text(f"{daemon.pid}\n")
        started = subprocess.run([str(SCRIPT), "start", str(cluster)], capture_output=True, text=True, timeout=60)
        assert started.returncode == 1
        assert "exists and is not empty" in started.stderr
        assert "daemons stopped" not in started.stderr
        assert daemon.poll() is None, "the running cluster's daemon was stopped"
        assert (cluster / "run" / "osd.0.pid").exists()
    finally:
        daemon.kill()
        daemon.wait()


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_multisite_and_no_rgw_exclude_each_other(tmp_path):
    done = run_script("start", str(tmp_path / "cluster"), "--multisite", "--no-rgw")
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr
    assert not (tmp_path / "cluster").exists()


def test_replicate_needs_a_prefix_or_all(tmp_path):
    done = run_script("replicate", str(tmp_path), "some-bucket")
    assert done.returncode == 2
    assert "one of the arguments --prefix --all is required" in done.stderr


def test_replicate_refuses_a_bucket_name_s3_would_refuse(tmp_path):
    done = run_script("replicate", str(tmp_path), "Not_A_Bucket", "--all")
    assert done.returncode == 2
    assert "not an S3 bucket name" in done.stderr


def test_replicate_on_a_single_gateway_cluster_says_so(tmp_path):
    (tmp_path / "env").write_text("CEPH_CONF=/nonexistent/ceph.conf\nRGW_ENDPOINT=http://127.0.0.1:9\n")
    done = run_script("replicate", str(tmp_path), "some-bucket", "--prefix", "blobs/")
    assert done.returncode == 1
    assert "was not started with --multisite" in done.stderr
    assert "Traceback" not in done.stderr


def test_pause_without_a_cluster_says_so(tmp_path):
    done = run_script("pause", str(tmp_path / "absent"), "some-bucket")
    assert done.returncode == 1
    assert "cannot read" in done.stderr and "ceph-cluster start" in done.stderr
    assert "Traceback" not in done.stderr
