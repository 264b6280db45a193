-- wrk body script: POST /students with a new record per request. Run from the repository root.
dofile("scripts/wrk/common.lua")

function request()
  local id = next_id()
  return wrk.format("POST", "/students", {["Content-Type"] = "application/json"},
    '{"id":' .. id .. ',"name":"wrk ' .. id .. '","score":42.5}')
end
