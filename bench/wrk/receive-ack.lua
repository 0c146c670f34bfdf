-- wrk -s bench/wrk/receive-ack.lua <node>/v1/queues/<queue> -- <max>
-- wrk -s bench/wrk/receive-ack.lua <node>/v1/topics/<topic>/subscriptions/<name> -- <max>
--
-- Receives up to <max> messages (visibility 60 s), then acks all of them in one request. wrk asks a
-- thread's script for each connection's next request without saying which connection answered what,
-- so the acks wait in a first-in first-out list of this thread: every receive that brought messages
-- is followed by one ack of exactly those, sent by the next connection that is free (often another).
-- Messages counted are those the acks' answers list as acked. Latency is per request, receives and
-- acks alike. The first receive that comes back empty ends the thread (the queue is drained) once
-- the acks it holds are sent.
local common = require("common")
setup = common.setup
done = common.done

local receive, ack_path
local acks, head, tail = {}, 1, 0 -- the waiting acks: acks[head .. tail]
local drained = false

function init(args)
  local max = tonumber(args[1] or "100")
  common.headers()
  receive = wrk.format("POST", wrk.path .. "/receive", nil, '{"maxMessages":' .. max .. ',"visibilityTimeoutSeconds":60}')
  ack_path = wrk.path .. "/ack"
end

function request()
  if head <= tail then
    local body = acks[head]
    acks[head] = nil
    head = head + 1
    return wrk.format("POST", ack_path, nil, body)
  end
  if drained then common.finish() end
  return receive
end

function response(status, headers, body)
  if not common.count(status) then return end
  -- an ack's answer: {"acked": [the handles acked], "failed": [...]}
  local acked = body:match('"acked":%[(.-)%]')
  if acked ~= nil then
    local _, n = acked:gsub('"[^"]*"', "")
    messages = messages + n
    local _, f = body:gsub('"receiptHandle":', "")
    ack_failed = ack_failed + f
    return
  end
  local handles = {}
  for h in body:gmatch('"receiptHandle":"([^"]+)"') do handles[#handles + 1] = '"' .. h .. '"' end
  if #handles == 0 then
    empty = empty + 1
    drained = true
    return
  end
  tail = tail + 1
  acks[tail] = '{"receiptHandles":[' .. table.concat(handles, ",") .. "]}"
end
