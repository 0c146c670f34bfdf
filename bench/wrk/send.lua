-- wrk -s bench/wrk/send.lua <node>/v1/queues/<queue>/messages -- 1
-- wrk -s bench/wrk/send.lua <node>/v1/queues/<queue>/messages/batch -- 100 [<stop after>]
-- wrk -s bench/wrk/send.lua <node>/v1/topics/<topic>/messages -- 1
--
-- Sends 1 KiB messages, one per request or a batch of n ({"messages": [...]}, for a .../batch path);
-- every request is the same, built once. A 2xx acknowledges the request's messages. With a second
-- argument the thread stops once it has that many acknowledged (filling a backlog).
local common = require("common")
setup = common.setup
done = common.done

local per, limit

function init(args)
  per = tonumber(args[1] or "1")
  limit = tonumber(args[2])
  common.headers()
  wrk.method = "POST"
  local one = '{"body":"' .. string.rep("x", 1024) .. '"}'
  if per == 1 then
    wrk.body = one
  else
    local items = {}
    for i = 1, per do items[i] = one end
    wrk.body = '{"messages":[' .. table.concat(items, ",") .. "]}"
  end
end

function response(status, headers, body)
  if not common.count(status) then return end
  messages = messages + per
  if limit ~= nil and messages >= limit then common.finish() end
end
