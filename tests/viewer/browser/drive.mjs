// Drives the served viewer in Debian's headless chromium (playwright-core, no downloaded browser) like a person:
// run list -> open a run -> Back to the list -> click the run's row -> its timeline -> a deep-capture run's layers
// -> Compare -> Performance -> a link naming a trace id.
// Usage: node drive.mjs '{"url": ..., "out": DIR, "run": LABEL, "deepRun": LABEL, "link": TRACE_ID, "chromium": PATH,
// "stopAfter": "timeline"}'
// (stopAfter: only the run list, the run and its timeline, for files with a single run).
// Or '{"url": ..., "out": DIR, "links": [URL, ...], "compare": [LABEL, ...]}': open each link and reload it (a shot
// each, with `opened`: the selected tab and sequence), then Compare the labelled runs and Performance.
// Prints one JSON document: [{name, file, url, text, charts}] (url = the address bar, text = what the page shows,
// charts = drawn chart heights).
import { deadline, launch } from "./launch.mjs";

const job = JSON.parse(process.argv[2]);
const shots = [];

const { browser, page } = await launch(job);
try {
  // Streamlit reruns the script after each interaction; wait until it is idle and the charts have drawn.
  // scope: a CSS prefix, e.g. the visible tab panel, so charts drawn earlier elsewhere do not count.
  async function settle(minCharts, scope = "") {
    await page.waitForFunction(
      ([n, s]) => !document.querySelector('[data-testid="stStatusWidget"]') &&
             document.querySelectorAll(`${s} .vega-embed canvas, ${s} .vega-embed svg.marks`).length >= n,
      [minCharts, scope], { timeout: deadline, polling: 100 });
  }
  const visibleTab = '[role="tabpanel"]:not([hidden])';
  async function shoot(name) {
    const file = `${job.out}/${name}.png`;
    await page.screenshot({ path: file });
    const text = await page.evaluate(() => document.querySelector('[data-testid="stMain"]')?.innerText ?? document.body.innerText);
    // The drawn height of every visible chart (its canvas or SVG, legend included), in CSS pixels.
    const charts = await page.evaluate(() => [...document.querySelectorAll('[data-testid="stMain"] .vega-embed')]
      .map((e) => e.querySelector("canvas, svg.marks")?.getBoundingClientRect().height ?? 0).filter((h) => h > 0));
    shots.push({ name, file, url: page.url(), text, charts });
  }
  async function pick(selectLabel, optionLabel) {
    const box = page.locator('[data-testid="stSelectbox"]').filter({ hasText: selectLabel }).first();
    await box.click();
    await page.getByRole("option", { name: optionLabel, exact: true }).click();
  }

  // Click the run-list row of the run labelled `label` ("time · model · risk · id"), as a person finds it in a long
  // list: search its id, then click the one row left (the table is drawn on a canvas; rows are 35 px, as the header).
  async function clickRow(label) {
    const search = page.getByLabel("Search model, provider, service or id");
    await search.fill(label.split(" · ").at(-1));
    await search.press("Enter");
    await page.getByText(/^1 of \d+ runs$/).waitFor();
    await settle(1);
    const grid = page.locator('[data-testid="stDataFrame"]').first();
    await grid.scrollIntoViewIfNeeded();
    const box = await grid.boundingBox();
    await page.mouse.click(box.x + 200, box.y + 35 + 35 / 2);
  }

  // The view a link opened: the selected tab, and what the visible tab's sequence picker shows (null when none).
  async function opened() {
    return await page.evaluate(() => {
      const tab = document.querySelector('[role="tab"][aria-selected="true"]')?.innerText ?? null;
      const panel = document.querySelector('[role="tabpanel"]:not([hidden])');
      const box = [...(panel?.querySelectorAll('[data-testid="stSelectbox"]') ?? [])]
        .find((b) => b.innerText.startsWith("Sequence"));
      return { tab, seq: box?.querySelector("input")?.value ?? null };
    });
  }

  if (job.links) {  // links in from tracing UIs (with seq= and tab=), each reloaded; then Compare with many runs
    for (const [i, link] of job.links.entries()) {
      await page.goto(link);
      await page.getByText("Risk score", { exact: true }).waitFor();
      await settle(1, visibleTab);
      await shoot(`link${i}`);
      shots.at(-1).opened = await opened();
      await page.reload();
      await page.getByText("Risk score", { exact: true }).waitFor();
      await settle(1, visibleTab);
      await shoot(`reload${i}`);
      shots.at(-1).opened = await opened();
    }
    await page.locator('[data-testid="stSidebar"]').getByText("Compare", { exact: true }).click();
    await page.getByText("Signals overlaid", { exact: false }).waitFor();
    await settle(2);
    const picker = page.locator('[data-testid="stMultiSelect"]').first();
    for (const label of job.compare.slice(2)) {  // the first two runs are picked on arrival
      await picker.click();
      await page.getByRole("option", { name: label, exact: true }).click();
      await page.keyboard.press("Escape");
      await page.waitForFunction(() => !document.querySelector('[data-testid="stStatusWidget"]'), null, { polling: 100 });
    }
    await settle(4);
    await shoot("compare");
    await page.locator('[data-testid="stSidebar"]').getByText("Performance", { exact: true }).click();
    await page.getByText("Median time to first token", { exact: true }).waitFor();
    await settle(1);
    await shoot("performance");
    await browser.close();
    process.stdout.write(JSON.stringify(shots) + "\n");
    process.exit(0);
  }

  // The page writes its address at the end of the script run that drew it, a moment after the drawing: wait for it
  // as a person would see it change, before reading it or pressing Back (Back before it lands skips the page).
  async function addressNames(fragment) {
    await page.waitForFunction((f) => window.location.href.includes(f), fragment, { timeout: deadline, polling: 100 });
  }

  await page.goto(job.url);
  await page.waitForSelector('[data-testid="stMetricValue"]');
  await settle(1);
  await shoot("runs");

  await pick("Open a run", job.run);
  await settle(1);
  await page.getByRole("button", { name: "Open run" }).click();
  await page.getByText("Risk score", { exact: true }).waitFor();
  await settle(1);
  await addressNames("view=run&run=");
  await shoot("run");

  if (!job.stopAfter) {
    await page.goBack();
    await page.getByText("Open a run", { exact: true }).waitFor();
    await settle(1);
    await addressNames("view=runs");
    await shoot("back");
    await clickRow(job.run);
    await page.getByText("Risk score", { exact: true }).waitFor();
    await settle(1);
    await addressNames("view=run&run=");
    await shoot("row");
  }

  if (job.stopAfter === "timeline") { await page.getByRole("tab", { name: "Timeline" }).click(); await settle(4, visibleTab); await shoot("timeline"); }
  if (job.stopAfter) { await browser.close(); process.stdout.write(JSON.stringify(shots) + "\n"); process.exit(0); }

  await page.getByRole("tab", { name: "Timeline" }).click();
  await settle(4, visibleTab);
  await shoot("timeline");

  if (job.deepRun) {
    await pick("Run", job.deepRun);
    await page.getByText(job.deepRun.split(" · ")[1], { exact: true }).first().waitFor();
    await page.getByRole("tab", { name: "Layers" }).click();
    await page.getByText("Per-layer means over the captured steps", { exact: true }).waitFor();
    await settle(3, visibleTab);
    await shoot("layers");
  }

  await page.locator('[data-testid="stSidebar"]').getByText("Compare", { exact: true }).click();
  await page.getByText("Signals overlaid", { exact: false }).waitFor();
  await settle(2);
  await shoot("compare");

  await page.locator('[data-testid="stSidebar"]').getByText("Performance", { exact: true }).click();
  await page.getByText("Median time to first token", { exact: true }).waitFor();
  await settle(1);
  await shoot("performance");

  if (job.link) {  // a link from a tracing UI: the trace id after ?run=, in a new tab
    await page.goto(`${job.url}?run=${job.link}`);
    await page.getByText("Risk score", { exact: true }).waitFor();
    await settle(1);
    await shoot("link");
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(shots) + "\n");
