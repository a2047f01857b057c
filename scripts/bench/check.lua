-- wrk script for the bench: checks every answer's body and prints one JSON line at the end.
-- BENCH_TOTAL=n: the body's "total" must be within 1e-9 relative of n. BENCH_BODY=s: the body must equal s.
local expectedTotal = tonumber(os.getenv("BENCH_TOTAL") or "")
local expectedBody = os.getenv("BENCH_BODY")
if expectedTotal == nil and expectedBody == nil then
  error("check.lua needs BENCH_TOTAL or BENCH_BODY")
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per thread: right and wrong 2xx answers, and the other statuses as "503:12,500:1" for thread:get.
ok = 0
wrong = 0
statuses = ""
local byStatus = {}

local function right(body)
  if expectedBody ~= nil then
    return body == expectedBody
  end
  local total = tonumber(body:match('"total":%s*(%-?[%d%.eE%+%-]+)') or "")
  return total ~= nil and math.abs(total - expectedTotal) <= 1e-9 * math.max(1, math.abs(expectedTotal))
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    if right(body or "") then ok = ok + 1 else wrong = wrong + 1 end
    return
  end
  byStatus[status] = (byStatus[status] or 0) + 1
  local parts = {}
  for s, n in pairs(byStatus) do table.insert(parts, s .. ":" .. n) end
  statuses = table.concat(parts, ",")
end

local function ms(us)
  return string.format("%.3f", us / 1000)
end

function done(summary, latency, requests)
  local okSum, wrongSum, merged = 0, 0, {}
  for _, thread in ipairs(threads) do
    okSum = okSum + thread:get("ok")
    wrongSum = wrongSum + thread:get("wrong")
    for s, n in string.gmatch(thread:get("statuses"), "(%d+):(%d+)") do
      merged[s] = (merged[s] or 0) + tonumber(n)
    end
  end
  local parts = {}
  for s, n in pairs(merged) do table.insert(parts, string.format('"%s":%d', s, n)) end
  local e = summary.errors
  local answered = summary.requests > 0
  io.write(string.format(
    '{"requests":%d,"ok":%d,"wrong":%d,"statuses":{%s},' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},"durationS":%.6f,' ..
      '"p50Ms":%s,"p99Ms":%s,"maxMs":%s}\n',
    summary.requests, okSum, wrongSum, table.concat(parts, ","),
    e.connect, e.read, e.write, e.timeout, e.status, summary.duration / 1e6,
    answered and ms(latency:percentile(50)) or "null",
    answered and ms(latency:percentile(99)) or "null",
    answered and ms(latency.max) or "null"))
end
