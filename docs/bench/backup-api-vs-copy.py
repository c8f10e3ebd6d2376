# The consistent copy an automatic backup makes, two ways, on a 1 GB database of random rows:
# SQLite's backup API (what raftlite used before; it still does when no snapshot can be taken)
# against a plain file copy (what it does now, after a snapshot). Both destinations unsynced, as
# raftlite's temporary copy is. Run: python3 docs/bench/backup-api-vs-copy.py
import os, shutil, sqlite3, tempfile, time

d = tempfile.mkdtemp()
src = os.path.join(d, "db.sqlite")
c = sqlite3.connect(src)
c.executescript("""PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
    CREATE TABLE big (id INTEGER PRIMARY KEY, pad BLOB);
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000000)
    INSERT INTO big(pad) SELECT randomblob(1000) FROM c;""")
for _ in range(3):  # the first pass also warms the page cache; quote the later ones
    out = os.path.join(d, "copy.sqlite")
    t = time.time()
    dst = sqlite3.connect(out)
    dst.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
    c.backup(dst)
    dst.close()
    api = time.time() - t
    os.remove(out)
    t = time.time()
    shutil.copyfile(src, out)
    plain = time.time() - t
    os.remove(out)
    print(f"backup API {api:.2f} s, plain copy {plain:.2f} s")
shutil.rmtree(d)
