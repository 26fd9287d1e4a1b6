// app/api/maskpaint/jobs/[id]/route.ts: one poll (GET) or a cancel (DELETE), never a wait
import { ModalClient, httpStatusFor, isMaskpaintError } from "@maskpaint/client";

const maskpaint = new ModalClient({ baseUrl: process.env.MASKPAINT_API_URL, token: process.env.MASKPAINT_API_TOKEN });

type Ctx = { params: Promise<{ id: string }> };

function fail(err: unknown) {
  if (!isMaskpaintError(err)) throw err;
  return Response.json({ error: { code: err.code, message: err.message, field: err.field, retryable: err.retryable } }, { status: httpStatusFor(err) });
}

export async function GET(req: Request, { params }: Ctx) {
  try {
    // {id, status: queued | running | done | failed | cancelled, position?, progress?, output?, error?}
    // a finished job's URLs are signed afresh by each poll
    return Response.json(await maskpaint.status((await params).id, { signal: req.signal }));
  } catch (err) {
    return fail(err);
  }
}

export async function DELETE(req: Request, { params }: Ctx) {
  try {
    return Response.json(await maskpaint.cancel((await params).id, { signal: req.signal }));
  } catch (err) {
    return fail(err);
  }
}
