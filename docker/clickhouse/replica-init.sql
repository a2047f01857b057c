-- ch2, on its first start: the same table as ch1's, a second replica of it. No rows are inserted here:
-- the replica fetches ch1's parts, and SYNC REPLICA waits until it has them, so it never serves an empty table.
CREATE DATABASE IF NOT EXISTS analytics;

CREATE TABLE IF NOT EXISTS analytics.metrics
(
    ts DateTime,
    metric_name String,
    value Float64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/analytics/metrics', '{replica}')
ORDER BY (ts, metric_name);

SYSTEM SYNC REPLICA analytics.metrics;
