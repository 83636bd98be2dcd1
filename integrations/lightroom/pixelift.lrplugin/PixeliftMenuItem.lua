-- Library > Plug-in Extras and File > Plug-in Extras: "Enhance with pixelift…"
require('PixeliftEnhance').startFromMenu()
