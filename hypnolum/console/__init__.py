"""The session console: a web page (aiohttp, websockets, uPlot) that shows and steers
the pods of every hostd on a broker through MQTT alone (docs/console.md)."""
