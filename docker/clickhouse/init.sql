-- ch1, on its first start (empty data directory): the replicated table and the six demo rows (total 458).
-- ch2 creates the same table (replica-init.sql) and fetches the rows from here: they are inserted once.
CREATE DATABASE IF NOT EXISTS analytics;

CREATE TABLE IF NOT EXISTS analytics.metrics
(
    ts DateTime,
    metric_name String,
    value Float64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/analytics/metrics', '{replica}')
ORDER BY (ts, metric_name);

INSERT INTO analytics.metrics (ts, metric_name, value) VALUES
    ('2024-01-01 00:00:00', 'page_views', 100),
    ('2024-01-01 01:00:00', 'page_views', 150),
    ('2024-01-01 02:00:00', 'page_views', 200),
    ('2024-01-01 00:00:00', 'errors', 2),
    ('2024-01-01 01:00:00', 'errors', 1),
    ('2024-01-01 02:00:00', 'errors', 5);
