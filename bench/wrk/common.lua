-- What the bench's wrk scripts share (bench/wrk.ts runs them, one wrk process per node, with
-- LUA_PATH=bench/wrk/?.lua and the caller's token in MOM_BENCH_TOKEN):
--   * each thread counts the answers by status, the messages they acknowledged and the receives that
--     came back empty, in globals of its own Lua state;
--   * done() (in wrk's main Lua state) collects them with thread:get() and prints one line,
--     `WRK_RESULT {json}`: the counts, wrk's latency percentiles and wrk's own CPU time;
--   * a thread that has nothing left to do (a backlog filled, a queue drained) says
--     `wrk-thread-finished` on stderr and stops; wrk itself would wait for -d to run out, so the caller
--     sends it SIGINT, after which wrk reports as usual.
local M = {}

-- This thread's counts (tables of strings and numbers only: thread:get() copies nothing else).
statuses = {}  -- answers by status ("201" = n)
messages = 0   -- messages acknowledged: 2xx answers times the messages each carried
empty = 0      -- receives answered with no message
ack_failed = 0 -- handles an ack's 2xx answer lists as failed (stale or invalid)

local threads = {}

function M.setup(thread)
  threads[#threads + 1] = thread
end

-- Adds the caller's token and the JSON content type to wrk.headers (kept as a table: wrk put Host in it).
function M.headers()
  local token = os.getenv("MOM_BENCH_TOKEN")
  if token == nil then error("MOM_BENCH_TOKEN is not set") end
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function M.count(status)
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
  return status >= 200 and status < 300
end

local finished = false
function M.finish()
  if finished then return end
  finished = true
  io.stderr:write("wrk-thread-finished\n")
  wrk.thread:stop()
end

-- wrk's own CPU time (utime + stime, clock ticks; fields 14 and 15 of /proc/<pid>/stat), all threads.
local function cpu_ticks()
  local f = io.open("/proc/self/stat", "r")
  if f == nil then return -1 end
  local rest = f:read("*a"):match("%) (.*)$")
  f:close()
  local fields = {}
  for x in rest:gmatch("%S+") do fields[#fields + 1] = x end
  return tonumber(fields[12]) + tonumber(fields[13])
end

-- The percentiles printed: every 0.5 up to 99, every 0.1 up to 99.9, every 0.01 up to 100. The caller
-- merges the processes' tables into one distribution (bench/wrk.ts).
local grid = {}
for i = 1, 198 do grid[#grid + 1] = i * 0.5 end
for i = 1, 9 do grid[#grid + 1] = 99 + i * 0.1 end
for i = 1, 10 do grid[#grid + 1] = 99.9 + i * 0.01 end

function M.done(summary, latency, requests)
  local ticks = cpu_ticks() -- first, so that what follows is not counted
  local all, n, empties, failed = {}, 0, 0, 0
  for _, t in ipairs(threads) do
    n = n + t:get("messages")
    empties = empties + t:get("empty")
    failed = failed + t:get("ack_failed")
    for k, v in pairs(t:get("statuses")) do all[k] = (all[k] or 0) + v end
  end
  local st = {}
  for k, v in pairs(all) do st[#st + 1] = string.format('"%s":%d', k, v) end
  local pct = {}
  for _, p in ipairs(grid) do pct[#pct + 1] = string.format("[%.2f,%d]", p, latency:percentile(p)) end
  local e = summary.errors
  -- with no answer at all, wrk's minimum is still its initial, huge value (and its mean not a number)
  local min = summary.requests > 0 and latency.min or 0
  local mean = summary.requests > 0 and latency.mean or 0
  io.write(string.format(
    'WRK_RESULT {"durationUs":%d,"requests":%d,"messages":%d,"emptyReceives":%d,"ackFailed":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
    '"latencyUs":{"min":%d,"max":%d,"mean":%.1f,"percentiles":[%s]},"cpuTicks":%d}\n',
    summary.duration, summary.requests, n, empties, failed, table.concat(st, ","),
    e.connect, e.read, e.write, e.timeout, e.status,
    min, latency.max, mean, table.concat(pct, ","), ticks))
end

return M
