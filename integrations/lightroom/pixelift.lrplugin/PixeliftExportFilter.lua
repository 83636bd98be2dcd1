--[[----------------------------------------------------------------------------
PixeliftExportFilter.lua: the post-process action "Enhance with pixelift" for any export.

Each rendered file is sent to `pixelift serve` and replaced by its enhanced version (same
format, metadata carried). A file that fails keeps its un-enhanced rendering and is
reported as failed for that photo.
------------------------------------------------------------------------------]]

local LrFileUtils = import 'LrFileUtils'
local LrPathUtils = import 'LrPathUtils'
local LrTasks = import 'LrTasks'
local LrView = import 'LrView'

local Client = require 'PixeliftClient'
local Enhance = require 'PixeliftEnhance'

local Filter = {}

Filter.exportPresetFields = {
	{ key = 'pixelift_model', default = 'auto' },
	{ key = 'pixelift_scale', default = '2' },
	{ key = 'pixelift_precision', default = 'auto' },
	{ key = 'pixelift_provider', default = 'auto' },
}

function Filter.sectionForFilterInDialog(f, propertyTable)
	local bind = LrView.bind
	local items = Enhance.items
	return {
		title = 'Enhance with pixelift',
		f:row {
			f:static_text { title = 'Model (or auto):' },
			f:edit_field { value = bind { key = 'pixelift_model', object = propertyTable }, width_in_chars = 24 },
		},
		f:row {
			f:static_text { title = 'Scale:' },
			f:popup_menu { value = bind { key = 'pixelift_scale', object = propertyTable }, items = items { '1', '2', '3', '4' } },
			f:static_text { title = 'Precision:' },
			f:popup_menu { value = bind { key = 'pixelift_precision', object = propertyTable }, items = items { 'auto', 'fp32', 'bf16', 'fp16', 'int8' } },
		},
	}
end

-- Enhance one rendered file in place; returns true, or false and why.
function Filter.enhanceFile(client, path, settings)
	local ext = LrPathUtils.extension(path)
	local out = LrPathUtils.child(LrPathUtils.parent(path),
		LrPathUtils.removeExtension(LrPathUtils.leafName(path)) .. Enhance.SUFFIX .. '.' .. ext)
	local job = Enhance.jobOptions(settings)
	job.format = nil -- the export's own format, at the export's own JPEG quality
	if settings.quality then job.quality = settings.quality end
	job.inputs, job.outputs = { path }, { out }
	local submitted, err = client:submit(job)
	if not submitted then return false, err end
	local final
	final, err = client:follow(submitted.id, function() return false end)
	if not final then return false, err end
	local f = final.files[1]
	if f.status ~= 'done' then return false, f.error or f.status end
	-- the rendering is set aside, not deleted, until the enhanced file has taken its place
	local aside = path .. '.pixelift-original'
	if LrFileUtils.move(path, aside) == false then
		LrFileUtils.delete(out)
		return false, 'could not set ' .. path .. ' aside'
	end
	if LrFileUtils.move(out, path) == false then
		LrFileUtils.move(aside, path)
		LrFileUtils.delete(out)
		return false, 'could not move ' .. out .. ' to ' .. path
	end
	LrFileUtils.delete(aside)
	return true
end

function Filter.postProcessRenderedPhotos(functionContext, filterContext)
	local props = filterContext.propertyTable
	local settings = {
		model = props.pixelift_model, scale = props.pixelift_scale,
		precision = props.pixelift_precision, provider = props.pixelift_provider,
	}
	if props.LR_format == 'JPEG' and tonumber(props.LR_jpeg_quality) then -- Lightroom's slider is 0..1
		settings.quality = math.max(1, math.min(100, math.floor(tonumber(props.LR_jpeg_quality) * 100 + 0.5)))
	end
	local client, why = Client.ensure()
	for sourceRendition, renditionToSatisfy in filterContext:renditions() do
		local ok, pathOrMessage = sourceRendition:waitForRender()
		if not ok then
			renditionToSatisfy:renditionIsDone(false, pathOrMessage)
		elseif not client then
			renditionToSatisfy:renditionIsDone(false, why)
		else
			local ran, enhanced, err = LrTasks.pcall(Filter.enhanceFile, client, pathOrMessage, settings)
			if not ran then enhanced, err = false, enhanced end -- an error thrown: this photo fails, the others go on
			if enhanced then
				renditionToSatisfy:renditionIsDone(true)
			else
				renditionToSatisfy:renditionIsDone(false, 'pixelift: ' .. tostring(err))
			end
		end
	end
end

return Filter
