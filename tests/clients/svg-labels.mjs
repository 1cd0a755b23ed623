// Opens an SVG flame graph in headless Chromium, lets its script lay out the
// labels (inferno's own code fits each label to its box at load), and checks
// every box that shows a label: the label must be the beginning of the
// function's name (its tooltip), cut with "..", never the name's tail.
//
// Usage: node svg-labels.mjs FILE [SCREENSHOT.png]
// Prints "labels N, cut M" and the offending labels; exits 1 when any label is
// not the beginning of its name, or when no label shows at all.
import path from 'node:path'
import { chromium } from 'playwright-core'

const [file, shot] = process.argv.slice(2)
if (!file) {
  console.error('usage: svg-labels.mjs FILE [SCREENSHOT.png]')
  process.exit(1)
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
})
try {
  const page = await browser.newPage({ viewport: { width: 1220, height: 900 } })
  const errors = []
  page.on('pageerror', e => errors.push(e.message))
  await page.goto(`file://${path.resolve(file)}`)
  await page.waitForLoadState('load')
  const frames = await page.evaluate(() =>
    Array.from(document.querySelectorAll('#frames > g')).map(g => ({
      // the tooltip is "NAME (N unit, P%)"; inferno's script strips the same suffix
      name: (g.querySelector('title')?.textContent || '').replace(/ \([^(]*\)$/, ''),
      // the script keeps the space before the suffix it strips
      label: (g.querySelector('text')?.textContent || '').trimEnd(),
    })))
  if (shot) {
    // the whole graph in view: a viewport as tall as the image
    const height = await page.evaluate(() => document.documentElement.height.baseVal.value)
    await page.setViewportSize({ width: 1220, height: Math.min(Math.ceil(height), 4000) })
    await page.screenshot({ path: shot })
  }
  if (errors.length) {
    console.error(`svg-labels: page errors: ${errors.join('; ')}`)
    process.exitCode = 1
  }
  const shown = frames.filter(f => f.label !== '')
  const bad = shown.filter(f => {
    const head = f.label.endsWith('..') ? f.label.slice(0, -2) : f.label
    return !f.name.startsWith(head) || (!f.label.endsWith('..') && f.label !== f.name)
  })
  const cut = shown.filter(f => f.label.endsWith('..') && f.label !== f.name)
  console.log(`labels ${shown.length}, cut ${cut.length}`)
  for (const f of bad.slice(0, 10)) console.log(`not the name's beginning: ${JSON.stringify(f)}`)
  if (shown.length === 0 || bad.length > 0) process.exitCode = 1
} finally {
  await browser.close()
}
