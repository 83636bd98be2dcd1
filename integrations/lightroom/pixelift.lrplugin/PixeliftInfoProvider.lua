--[[----------------------------------------------------------------------------
PixeliftInfoProvider.lua: the Plug-in Manager section: service status and pixelift path.
------------------------------------------------------------------------------]]

local LrTasks = import 'LrTasks'
local LrView = import 'LrView'

local Client = require 'PixeliftClient'

local Info = {}

-- One line about the service, for the section (and the tests).
function Info.statusLine()
	local client, why = Client.find()
	if not client then return 'Not running: ' .. tostring(why) end
	local health = client:health() or {}
	local jobs = health.jobs or {}
	return string.format('Running: pixelift %s at %s (pid %s), %s job(s) running, %s queued',
		tostring(health.version), client.baseUrl, tostring(health.pid), tostring(jobs.running or 0), tostring(jobs.queued or 0))
end

function Info.sectionsForTopOfDialog(f, propertyTable)
	local prefs = Client.prefs()
	local bind = LrView.bind
	propertyTable.pixeliftPath = prefs.pixeliftPath
	propertyTable.serviceStatus = 'Checking…'
	local function refresh()
		LrTasks.startAsyncTask(function() propertyTable.serviceStatus = Info.statusLine() end)
	end
	refresh()
	return {
		{
			title = 'pixelift service',
			f:row {
				f:static_text { title = 'pixelift command:', width = 120 },
				f:edit_field { value = bind 'pixeliftPath', width_in_chars = 40 },
			},
			f:row {
				f:static_text { title = 'Service:', width = 120 },
				f:static_text { title = bind 'serviceStatus', fill_horizontal = 1, width_in_chars = 60 },
			},
			f:row {
				f:push_button { title = 'Refresh', action = function() refresh() end },
				f:push_button {
					title = 'Start service',
					action = function()
						LrTasks.startAsyncTask(function()
							local _, why = Client.ensure()
							propertyTable.serviceStatus = why and ('Could not start: ' .. why) or Info.statusLine()
						end)
					end,
				},
			},
			f:static_text { title = 'Service folder (token, port): ' .. Client.serviceFolder(), fill_horizontal = 1 },
		},
	}
end

function Info.endDialog(propertyTable)
	local prefs = Client.prefs()
	if propertyTable.pixeliftPath and propertyTable.pixeliftPath ~= '' then prefs.pixeliftPath = propertyTable.pixeliftPath end
end

return Info
