-- wrk body script for OpenRaft's raft-kv-memstore example: POST /write setting a new key per
-- request (the peer of create-student.lua in scripts/bench-compare.sh). Run from the
-- repository root.
dofile("scripts/wrk/common.lua")

function request()
  local id = next_id()
  return wrk.format("POST", "/write", {["Content-Type"] = "application/json"},
    '{"Set":{"key":"k' .. id .. '","value":"wrk ' .. id .. '"}}')
end
