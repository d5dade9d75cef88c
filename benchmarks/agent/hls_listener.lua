-- wrk script: requests as HLS listeners make them. Each pair of requests is one listener's turn: the playlist
-- of a station, then the newest segment that playlist lists, with a session id (?s=) as players send it.
-- The newest segments are read from the stations' playlists on disk (wrk runs on the origin host; hls-playlists
-- writes them to OUTPUT_ROOT/_playlists/<slug>.m3u8), and read
-- again every REFRESH requests, so every segment asked for is one a player would ask for.
-- Usage: wrk -s hls_listener.lua URL -- OUTPUT_ROOT SLUG...
-- done() prints one JSON line: requests, duration, errors and latency percentiles (microseconds).

local REFRESH = 500
local root, slugs, newest = "/run/hls", {}, {}
local counter, tag = 0, tostring(math.random(100000, 999999))
local slug, session

local function read_newest()
   for _, name in ipairs(slugs) do
      local file = io.open(root .. "/_playlists/" .. name .. ".m3u8", "r")
      if file then
         for line in file:lines() do
            if line:sub(-3) == ".ts" then newest[name] = line end
         end
         file:close()
      end
   end
end

function init(args)
   root = args[1] or root
   for i = 2, #args do slugs[#slugs + 1] = args[i] end
   math.randomseed(os.time() + tonumber(tag))
   read_newest()
end

function request()
   counter = counter + 1
   if counter % REFRESH == 0 then read_newest() end
   if counter % 2 == 1 then
      slug = slugs[math.random(#slugs)]
      session = tag .. "-" .. counter
      return wrk.format("GET", "/hls/" .. slug .. "/index.m3u8?s=" .. session)
   end
   return wrk.format("GET", "/hls/" .. slug .. "/" .. (newest[slug] or "missing.ts") .. "?s=" .. session)
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": %d, "non_2xx": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      errors.connect + errors.read + errors.write + errors.timeout, errors.status,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
