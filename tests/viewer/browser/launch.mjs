// Debian's headless chromium (playwright-core, no downloaded browser) as every browser scenario here starts it, so
// the scenarios see the same page: the same flags, a 1400-pixel-wide viewport and the same deadline.
import { chromium } from "playwright-core";

// How long any wait may take (ms): a loaded machine draws slowly.
export const deadline = 60_000;

// Launch the browser and open one page; job.chromium names the executable, job.height the viewport's height.
export async function launch(job) {
  const browser = await chromium.launch({
    executablePath: job.chromium || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--no-first-run", "--disable-sync", "--disable-quic"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: job.height || 1600 } });
    page.setDefaultTimeout(deadline);
    return { browser, page };
  } catch (error) {
    await browser.close();
    throw error;
  }
}
