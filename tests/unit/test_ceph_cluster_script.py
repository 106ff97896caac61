"""scripts/ceph-cluster: a start that cannot claim its directory leaves what is there alone."""

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
