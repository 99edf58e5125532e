// The text scenario in Debian's headless chromium (playwright-core): the run list -> search a word of a run's text
// -> click the one row left -> that run's page, text first -> its timeline.
// Usage: node text.mjs '{"url": ..., "out": DIR, "search": WORD, "chromium": PATH}'
// Prints one JSON document: [{name, file, url, text, charts}] (url = the address bar, text = what the page shows,
// charts = charts drawn in the open tab).
import { deadline, launch } from "./launch.mjs";

const job = JSON.parse(process.argv[2]);
const shots = [];

const { browser, page } = await launch(job);
try {
  // Streamlit reruns the script after each interaction: wait until it is idle and no element of the last page is
  // left stale (faded) on this one.
  async function settle() {
    await page.waitForFunction(
      () => !document.querySelector('[data-testid="stStatusWidget"]') && !document.querySelector('[data-stale="true"]'),
      null, { timeout: deadline, polling: 100 });
  }
  async function shoot(name) {
    const file = `${job.out}/${name}.png`;
    await page.screenshot({ path: file });
    const text = await page.evaluate(() => document.querySelector('[data-testid="stMain"]')?.innerText ?? document.body.innerText);
    // Charts drawn (a Vega expression that does not parse, as an axis label's, draws none).
    const charts = await page.evaluate(() => document.querySelectorAll(
      '[role="tabpanel"]:not([hidden]) .vega-embed canvas, [role="tabpanel"]:not([hidden]) .vega-embed svg.marks').length);
    shots.push({ name, file, url: page.url(), text, charts });
  }

  await page.goto(job.url);
  await page.waitForSelector('[data-testid="stMetricValue"]');
  await settle();
  await shoot("runs");

  const search = page.getByLabel("Search model, provider, service or id, prompt and output");
  await search.fill(job.search);
  await search.press("Enter");
  await page.getByText(/^1 of \d+ runs$/).waitFor();
  await settle();
  await shoot("search");

  // The one row left (the table is drawn on a canvas; rows are 35 px, as the header).
  const grid = page.locator('[data-testid="stDataFrame"]').first();
  await grid.scrollIntoViewIfNeeded();
  const box = await grid.boundingBox();
  await page.mouse.click(box.x + 200, box.y + 35 + 35 / 2);
  await page.getByText("Risk score", { exact: true }).waitFor();
  await settle();
  // The prompt and output blocks at the top hold their text.
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="stCode"]')].slice(0, 2)
    .every((e) => e.innerText.trim().length > 0), null, { timeout: deadline, polling: 100 });
  await shoot("run");

  // Its timeline: steps named by their tokens on the x axes.
  await page.getByRole("tab", { name: "Timeline" }).click();
  await page.waitForFunction(() => document.querySelectorAll(
    '[role="tabpanel"]:not([hidden]) .vega-embed canvas, [role="tabpanel"]:not([hidden]) .vega-embed svg.marks').length >= 4,
    null, { timeout: deadline, polling: 100 });
  await settle();
  await page.locator('[role="tabpanel"]:not([hidden]) .vega-embed').first().scrollIntoViewIfNeeded();
  await shoot("timeline");
} finally {
  await browser.close();
}
console.log(JSON.stringify(shots));
