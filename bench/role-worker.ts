// The worker role exactly as `npm run start:worker` runs it (src/main-worker.ts), under a command
// line of its own (see role-api.ts).
import '../src/main-worker.ts';
