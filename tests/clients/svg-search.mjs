// Opens an SVG flame graph in headless Chromium and uses its search box the way a
// user would (inferno's search(), which the Search button prompts for), then reads
// the "Matched: N%" line it shows.
//
// Usage: node svg-search.mjs FILE TERM
// Prints the matched percentage; exits 1 when the search matched nothing.
import path from 'node:path'
import { chromium } from 'playwright-core'

const [file, term] = process.argv.slice(2)
if (!file || !term) {
  console.error('usage: svg-search.mjs FILE TERM')
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
  const page = await browser.newPage()
  const errors = []
  page.on('pageerror', e => errors.push(e.message))
  await page.goto(`file://${path.resolve(file)}`)
  // The Search button opens a prompt; answer it with the term.
  page.once('dialog', d => d.accept(term))
  await page.locator('#search').click()
  const matched = page.locator('#matched')
  await matched.filter({ hasText: 'Matched' }).waitFor({ timeout: 10000 }).catch(() => {})
  const text = (await matched.textContent()) || ''
  const highlighted = await page.locator('g rect[fill="rgb(230,0,230)"]').count()
  if (errors.length) {
    console.error(`svg-search: page errors: ${errors.join('; ')}`)
    process.exit(1)
  }
  const pct = /Matched: ([0-9.]+)%/.exec(text)
  if (!pct || highlighted === 0) {
    console.error(`svg-search: no match for ${JSON.stringify(term)} (matched text ${JSON.stringify(text)}, ${highlighted} highlighted)`)
    process.exit(1)
  }
  console.log(pct[1])
} finally {
  await browser.close()
}
