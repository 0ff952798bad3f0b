// Playwright configuration for running the reference Mercure conformance suite
// (conformance-tests/ in https://github.com/dunglas/mercure) against Quicksilver.
// Used by scripts/conformance.sh; the suite itself is never copied into this repository.
//
//   CONFORMANCE_TEST_DIR  directory holding mercure.spec.ts (a scratch copy of the suite)
//   CONFORMANCE_OUTPUT    directory for Playwright's artifacts (default: <test dir>/test-results)
//   BASE_URL              e.g. http://127.0.0.1:3000/.well-known/mercure
//   CUSTOM_ID=1           the suite then checks that the publish answer echoes the given id
//   CHROMIUM_PATH         browser binary (default /usr/bin/chromium; browsers are not downloaded)
//
// Plain object on purpose: this file lives outside the suite's node_modules.
const path = require("path");

const testDir = process.env.CONFORMANCE_TEST_DIR;
if (!testDir) throw new Error("CONFORMANCE_TEST_DIR is not set");

module.exports = {
  testDir,
  testMatch: "mercure.spec.ts",
  outputDir: process.env.CONFORMANCE_OUTPUT || path.join(testDir, "test-results"),
  timeout: 10 * 1000,
  expect: { timeout: 5000 },
  forbidOnly: true,
  retries: 0,
  workers: 1,
  reporter: "list",
  use: {
    baseURL: process.env.BASE_URL || "https://localhost/.well-known/mercure",
    ignoreHTTPSErrors: true,
    trace: "off",
  },
  projects: [
    {
      name: "chromium",
      use: {
        browserName: "chromium",
        viewport: { width: 1280, height: 720 },
        launchOptions: {
          executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
          args: [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
          ],
        },
      },
    },
  ],
};
