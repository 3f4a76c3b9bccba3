#!/usr/bin/env python3
"""Where the CPU of Roost's processes goes, by component, side by side for
several profiles (benches/profile.md).

usage: components.py LABEL=PERF_SCRIPT ...

Each PERF_SCRIPT is `perf script -F comm,pid,tid,ip,sym --no-inline` of a
`perf record --call-graph dwarf` (benches/profile/record.sh). A sample is
charged to the innermost frame that names a component (so the time inside
RocksDB called from the log store counts as RocksDB, a memcpy counts for its
caller's component, and an allocation as allocation); kernel samples by what
the kernel was doing. Prints a Markdown table: % of samples per profile."""
import sys, re, collections

COMP = [
    ('allocation (mimalloc)', r'^(mi_|_mi_|malloc|free|calloc|realloc|__rust_alloc|__rust_dealloc|__rdl_|cfree|operator new|operator delete)'),
    ('tracing (spans, subscriber)', r'^<?(tracing|tracing_core|tracing_subscriber|tracing_opentelemetry|opentelemetry)|roost::telemetry::traces'),
    ('metrics (labels, registry)', r'^<?(metrics|metrics_util|metrics_exporter_prometheus|roost::telemetry)|as metrics::'),
    ('TLS (rustls, ring)', r'rustls|^<?ring::|ring_core|aes_gcm|gcm_|tokio_rustls'),
    ('RocksDB', r'^<?(rocksdb|rocksdb_|roost::storage)|librocksdb|as rocksdb::'),
    ('openraft (RaftCore, replication, metrics)', r'^<?openraft|as openraft::'),
    ('proposer, log store, state machine glue', r'^<?roost::replication'),
    ('gRPC (tonic, h2, prost, tower)', r'^<?(h2::|tonic|prost|hyper::proto::h2|hyper_util::client|roost::rpc|tower::|hyper::client|postcard)|as prost::|as tonic::|roost::rpc::|as tower'),
    ('edge HTTP (hyper h1, axum) and router', r'^<?(axum|hyper::proto::h1|hyper_util::server|roost::edge|matchit|roost::node::router)|as axum::|roost::edge::|roost::node::router'),
    ('executor, runtime, app (object)', r'^<?roost::(object|app)|roost::object::|serde_json'),
    ('tokio scheduler, timers, channels', r'^<?tokio|as tokio::|mio::'),
]
COMP = [(n, re.compile(p)) for n, p in COMP]

def kernel_class(frames):
    j = ' '.join(frames[:40])
    if re.search(r'fdatasync|ext4_sync_file|jbd2|file_write_and_wait|blk_|virtio|iowrite', j):
        return 'fsync of the WAL (kernel)'
    if re.search(r'futex|schedule|finish_task_switch|try_to_wake_up', j):
        return 'kernel: thread park/wake (futex, context switch)'
    if re.search(r'tcp_|sock_|inet|ip_|skb|net_rx|loopback|__dev|softirq|epoll|ep_poll', j):
        return 'kernel: TCP over loopback, epoll'
    if re.search(r'ext4|vfs_write|pwrite|write_iter|page_cache|filemap|generic_perform_write', j):
        return 'kernel: RocksDB file writes (WAL write, flush)'
    return 'kernel: other'

def rocks(frames):
    j = ' '.join(frames[:40])
    if re.search(r'MemTable::Add|WriteImpl|WriteToWAL|AddRecord|rocksdb_write|WriteBatch', j):
        return 'RocksDB: writes (WAL record, memtable insert)'
    if re.search(r'Flush|Compact|BuildTable|BlockBased', j):
        return 'RocksDB: flush, compaction'
    return 'RocksDB: reads (iterators, gets)'

def classify(frames, kflags, comm):
    if comm == 'roost-wal-sync' and kflags[0]:
        return 'fsync of the WAL (kernel)'
    if kflags[0]:
        return kernel_class([s for s, k in zip(frames, kflags) if k])
    start = 1 if re.search(r'memmove|memcpy|memset|memcmp', frames[0]) else 0
    for s in frames[start:]:
        for n, p in COMP:
            if p.search(s):
                if n == 'RocksDB':
                    return rocks(frames)
                return n
    if start:
        return 'memcpy (caller unknown)'
    return 'other (unresolved)'

def load(path):
    out = collections.Counter(); tot = 0
    cur = None; comm = None
    def flush():
        nonlocal tot
        if cur and cur[0]:
            out[classify(cur[0], cur[1], comm)] += 1
            tot += 1
    for line in open(path):
        line = line.rstrip('\n')
        if not line:
            flush(); cur = None; continue
        if not line.startswith('\t'):
            comm = line.split()[0]; cur = ([], []); continue
        parts = line.strip().split(' ', 1)
        cur[0].append(parts[1] if len(parts) > 1 else '[unknown]')
        cur[1].append(parts[0].startswith('ffffffff'))
    flush()
    return out, tot

cols = []
for arg in sys.argv[1:]:
    label, path = arg.split('=', 1)
    cols.append((label,) + load(path))
keys = collections.Counter()
for _, c, t in cols:
    for k, v in c.items(): keys[k] += v / t
print('| component | ' + ' | '.join(l for l, _, _ in cols) + ' |')
print('|---|' + '---:|' * len(cols))
for k, _ in keys.most_common():
    print(f'| {k} | ' + ' | '.join(f'{100*c[k]/t:.1f}%' for _, c, t in cols) + ' |')
print('| samples | ' + ' | '.join(str(t) for _, _, t in cols) + ' |')
