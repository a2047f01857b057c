import { createClient } from '@clickhouse/client'
const url = process.argv[2]
const client = createClient({ url, max_open_connections: 1 })
console.log(await client.ping())
const v = await client.query({ query: 'SELECT version() AS v', format: 'JSONEachRow' })
console.log(await v.json())
await client.command({ query: 'CREATE DATABASE IF NOT EXISTS analytics' })
await client.command({ query: 'CREATE TABLE IF NOT EXISTS analytics.metrics (ts DateTime, metric_name String, value Float64) ENGINE = MergeTree ORDER BY (ts, metric_name)' })
const r = await client.query({ query: 'SELECT sum(value) AS total, count() AS n FROM analytics.metrics', format: 'JSONEachRow', query_id: 'abc-1' })
console.log(await r.json(), r.query_id)
try { await client.query({ query: 'SELECT nosuch', format: 'JSONEachRow' }) } catch (e) { console.log(e.constructor.name, e.code, e.type, JSON.stringify(e.message.slice(0,200))) }
try { await (await client.query({ query: 'SELECT 1', format: 'JSONEachRow', clickhouse_settings: { cancel_http_readonly_queries_on_client_close: 1 } })).json(); console.log('cancel setting ok') } catch (e) { console.log(e.constructor.name, e.code, e.type, JSON.stringify(e.message.slice(0,200))) }
try { await (await client.query({ query: 'SELECT 1', format: 'JSONEachRow', clickhouse_settings: { max_execution_time: 2, wait_end_of_query: 1 } })).json(); console.log('met ok') } catch (e) { console.log(e.constructor.name, e.code, e.type, JSON.stringify(e.message.slice(0,200))) }
try { await (await client.query({ query: 'SELECT sleep(2)', format: 'JSONEachRow', clickhouse_settings: { max_execution_time: 1 } })).json(); console.log('sleep ok') } catch (e) { console.log(e.constructor.name, e.code, e.type, JSON.stringify(e.message.slice(0,200))) }
const s = await client.query({ query: "SELECT name, value FROM system.settings WHERE name IN ('cancel_http_readonly_queries_on_client_close','wait_end_of_query','max_execution_time','send_progress_in_http_headers','http_headers_progress_interval_ms','date_time_input_format','output_format_json_quote_64bit_integers','readonly')", format: 'JSONEachRow' })
console.log(await s.json())
const c = await client.query({ query: 'SELECT count() AS n FROM system.settings', format: 'JSONEachRow' }); console.log(await c.json())
await client.close()
