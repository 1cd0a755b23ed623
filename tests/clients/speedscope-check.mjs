// Opens a speedscope file the way a user would: validates it against the JSON
// schema the speedscope package ships, then loads it into the real speedscope app
// (from the same package) in headless Chromium and checks that the profile is
// accepted and that the expected frames are shown (in the Sandwich view's table).
//
// Usage: node speedscope-check.mjs FILE FRAME [FRAME...]
// Exits 0 when all is well; otherwise prints why and exits 1.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import Ajv from 'ajv'
import { chromium } from 'playwright-core'

const require = createRequire(import.meta.url)
const release = path.join(path.dirname(require.resolve('speedscope/package.json')), 'dist', 'release')

function fail(msg) {
  console.error(`speedscope-check: ${msg}`)
  process.exit(1)
}

const [file, ...expected] = process.argv.slice(2)
if (!file || expected.length === 0) fail('usage: speedscope-check.mjs FILE FRAME [FRAME...]')

const bytes = fs.readFileSync(file)
const schema = JSON.parse(fs.readFileSync(path.join(release, 'file-format-schema.json'), 'utf8'))
const ajv = new Ajv({ strict: false, allErrors: true })
const validate = ajv.compile({ ...schema, $ref: '#/definitions/FileFormat.File' })
const doc = JSON.parse(bytes.toString('utf8'))
if (!validate(doc)) fail(`schema: ${ajv.errorsText(validate.errors)}`)

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'speedscope-check-'))
const loader = path.join(tmp, 'load.js')
fs.writeFileSync(
  loader,
  `speedscope.loadFileFromBase64(${JSON.stringify(path.basename(file))}, ${JSON.stringify(bytes.toString('base64'))})`,
)

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--allow-file-access-from-files',
  ],
})
let problem = null
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  page.on('dialog', async d => {
    problem = `speedscope showed a dialog: ${d.message()}`
    await d.dismiss()
  })
  page.on('pageerror', e => {
    problem = problem || `page error: ${e.message}`
  })
  const url = `file://${path.join(release, 'index.html')}#localProfilePath=${encodeURIComponent(loader)}`
  await page.goto(url)
  // The first profile's name appears in the toolbar once the file is accepted.
  const firstName = doc.profiles[doc.activeProfileIndex ?? 0].name
  try {
    await page.getByText(firstName, { exact: false }).first().waitFor({ timeout: 20000 })
  } catch {
    fail(problem || `speedscope never showed the profile ${JSON.stringify(firstName)}`)
  }
  if (problem) fail(problem)
  // Sandwich view: a DOM table of every function, unlike the canvas flame charts.
  await page.getByText('Sandwich').first().click()
  for (const name of expected) {
    try {
      await page.getByText(name, { exact: true }).first().waitFor({ timeout: 10000 })
    } catch {
      fail(`speedscope shows no frame named ${JSON.stringify(name)}`)
    }
  }
  if (problem) fail(problem)
  console.log(`speedscope accepted ${path.basename(file)}: profile ${JSON.stringify(firstName)}, frames ${expected.join(', ')}`)
} finally {
  await browser.close()
  fs.rmSync(tmp, { recursive: true, force: true })
}
