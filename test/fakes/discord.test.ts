import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ActionRowBuilder,
  AttachmentBuilder,
  ButtonBuilder,
  ButtonStyle,
  Client,
  DiscordAPIError,
  Events,
  GatewayIntentBits,
  MediaGalleryBuilder,
  MessageFlags,
  RESTEvents,
  type Interaction,
  type RateLimitData,
  type TextChannel,
} from 'discord.js';
import { MessageFlag, PERMISSION_MANAGE_GUILD, startFakeDiscord, type FakeDiscord, type FakeDiscordOptions } from './discord.js';

const TOKEN = 'fake-bot-token';
/** A 3×2 red PNG. */
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAMAAAACCAIAAAASFvFNAAAAEElEQVR4nGP4z8AAQQxwFgBB0gX7h/C5SAAAAABJRU5ErkJggg==',
  'base64',
);

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

async function setup(options: FakeDiscordOptions = {}): Promise<{ fake: FakeDiscord; client: Client }> {
  const fake = await startFakeDiscord({ token: TOKEN, ...options });
  cleanups.push(() => fake.close());
  const client = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: fake.apiUrl } });
  cleanups.push(() => client.destroy());
  const ready = once(client, Events.ClientReady);
  await client.login(TOKEN);
  await ready;
  return { fake, client };
}

/** Runs `handler` on the next interaction and resolves with its result (or rejects with its error). */
function nextInteraction<T>(client: Client, handler: (interaction: Interaction) => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    client.once(Events.InteractionCreate, (interaction) => {
      handler(interaction).then(resolve, reject);
    });
  });
}

describe('fake Discord with the real discord.js client', () => {
  it('logs in: gateway/bot, IDENTIFY with the token, READY, then the fake guild', async () => {
    const { fake, client } = await setup();
    expect(client.user?.id).toBe(fake.applicationId);
    expect(client.application?.id).toBe(fake.applicationId);
    expect(fake.identifies[0]?.['token']).toBe(TOKEN);
    expect(fake.callsTo('GET /gateway/bot')).toHaveLength(1);
    expect(fake.callsTo('GET /gateway/bot')[0]?.authOk).toBe(true);
    const guild = client.guilds.cache.get(fake.defaultGuildId ?? '');
    expect(guild?.available).toBe(true);
    expect(client.channels.cache.get(fake.defaultChannelId)?.isTextBased()).toBe(true);
  });

  it('a slash command: deferReply then editReply edits the channel message', async () => {
    const { fake, client } = await setup();
    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error(`unexpected ${interaction.type}`);
      const seen = {
        name: interaction.commandName,
        prompt: interaction.options.getString('prompt', true),
        count: interaction.options.getInteger('count', true),
        guild: interaction.guild?.id,
        channel: interaction.channel?.id,
        canManage: interaction.memberPermissions?.has('ManageGuild'),
      };
      await interaction.deferReply();
      const message = await interaction.editReply({ content: 'hello', allowedMentions: { parse: [] } });
      return { seen, messageId: message.id, messageContent: message.content };
    });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a red fox', count: 4 } });
    const result = await handled;

    expect(result.seen).toEqual({
      name: 'imagine',
      prompt: 'a red fox',
      count: 4,
      guild: fake.defaultGuildId,
      channel: fake.defaultChannelId,
      canManage: false,
    });
    const interaction = fake.interaction(sent.id);
    expect(interaction?.callbacks.map((c) => c.type)).toEqual([5]);
    // Recorded, not timed: the callback's delay is its arrival minus the dispatch, as the fake saw both.
    expect(interaction?.callbacks[0]?.sinceDispatchMs).toBe((interaction?.callbacks[0]?.at ?? NaN) - (interaction?.dispatchedAt ?? NaN));
    expect(interaction?.callbacks[0]?.status).toBe(204);
    const [edit] = fake.callsTo('PATCH /webhooks/:app/:token/messages/:m');
    expect(edit?.path).toBe(`/webhooks/${fake.applicationId}/${sent.token}/messages/@original`);
    expect(edit?.body).toMatchObject({ content: 'hello', allowed_mentions: { parse: [] } });
    expect(edit?.interactionId).toBe(sent.id);

    const message = fake.message(result.messageId);
    expect(message).toMatchObject({ content: 'hello', channel_id: fake.defaultChannelId, type: 20, allowed_mentions: { parse: [] } });
    expect((message?.flags ?? 0) & MessageFlag.Loading).toBe(0);
    expect(fake.messages(fake.defaultChannelId).map((m) => m.content)).toEqual(['hello']);
    expect(fake.messageHistory(result.messageId).map((v) => v.content)).toEqual(['', 'hello']);
    expect(result.messageContent).toBe('hello');
  });

  it('a followUp with an attachment records the file and serves its bytes', async () => {
    const { fake, client } = await setup();
    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      await interaction.deferReply({ flags: MessageFlags.Ephemeral });
      await interaction.editReply('working');
      const msg = await interaction.followUp({
        content: 'here it is',
        files: [new AttachmentBuilder(PNG, { name: 'fox.png', description: 'a fox' })],
      });
      return { id: msg.id, url: msg.attachments.first()?.url, width: msg.attachments.first()?.width };
    });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'x' } });
    const result = await handled;

    expect(fake.interaction(sent.id)?.callbacks[0]?.data).toEqual({ flags: MessageFlags.Ephemeral });
    const [post] = fake.callsTo('POST /webhooks/:app/:token');
    expect(post?.headers['content-type']).toMatch(/^multipart\/form-data/);
    expect(post?.query['wait']).toBe('true');
    expect(post?.body).toMatchObject({ content: 'here it is', attachments: [{ id: '0', description: 'a fox' }] });
    expect(post?.files).toHaveLength(1);
    expect(post?.files[0]).toMatchObject({ field: 'files[0]', name: 'fox.png', contentType: 'image/png', size: PNG.length });
    expect(post?.files[0]?.bytes.equals(PNG)).toBe(true);

    const message = fake.message(result.id);
    expect(message?.attachments[0]).toMatchObject({ filename: 'fox.png', size: PNG.length, width: 3, height: 2, content_type: 'image/png' });
    expect(result.width).toBe(3);
    expect(result.url).toBe(message?.attachments[0]?.url);
    const downloaded = Buffer.from(await (await fetch(result.url ?? '')).arrayBuffer());
    expect(downloaded.equals(PNG)).toBe(true);
    // The ephemeral original is in the store but not reachable with the bot token.
    const original = fake.messages(fake.defaultChannelId).find((m) => m.content === 'working');
    expect((original?.flags ?? 0) & MessageFlag.Ephemeral).toBe(MessageFlag.Ephemeral);
  });

  it('a button press reaches the client and interaction.update() edits the message', async () => {
    const { fake, client } = await setup();
    const channel = client.channels.cache.get(fake.defaultChannelId) as TextChannel;
    const row = new ActionRowBuilder<ButtonBuilder>().addComponents(
      new ButtonBuilder().setCustomId('review:approve:1').setLabel('Approve').setStyle(ButtonStyle.Success),
      new ButtonBuilder().setCustomId('review:reject:1').setLabel('Reject').setStyle(ButtonStyle.Danger),
    );
    const posted = await channel.send({ content: 'image 1', components: [row] });
    expect(fake.message(posted.id)?.components[0]?.['components']).toHaveLength(2);

    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isButton()) throw new Error('not a button');
      const seen = {
        customId: interaction.customId,
        messageId: interaction.message.id,
        user: interaction.user.id,
        canManage: interaction.memberPermissions?.has('ManageGuild'),
      };
      await interaction.update({ content: 'image 1: approved', components: [] });
      return seen;
    });
    const reviewer = { id: '222222222222222222', username: 'reviewer' };
    const sent = fake.pressButton({
      customId: 'review:approve:1',
      messageId: posted.id,
      user: reviewer,
      memberPermissions: PERMISSION_MANAGE_GUILD,
    });
    expect(await handled).toEqual({ customId: 'review:approve:1', messageId: posted.id, user: reviewer.id, canManage: true });

    expect(fake.interaction(sent.id)?.callbacks.map((c) => c.type)).toEqual([7]);
    expect(fake.message(posted.id)).toMatchObject({ content: 'image 1: approved', components: [] });
  });

  it('channel.messages.edit uses the bot-token route', async () => {
    const { fake, client } = await setup();
    const channel = client.channels.cache.get(fake.defaultChannelId) as TextChannel;
    const posted = await channel.send('Batch 1/3');
    const edited = await channel.messages.edit(posted.id, { content: 'Batch 2/3' });
    expect(edited.content).toBe('Batch 2/3');
    const [patch] = fake.callsTo('PATCH /channels/:c/messages/:m');
    expect(patch?.headers['authorization']).toBe(`Bot ${TOKEN}`);
    expect(patch?.authOk).toBe(true);
    expect(fake.message(posted.id)).toMatchObject({ content: 'Batch 2/3' });
    expect(fake.message(posted.id)?.edited_timestamp).not.toBeNull();
    // Bot-token edits work on a deferred (non-ephemeral) reply too: the path for jobs longer than 15 minutes.
    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      const response = await interaction.deferReply({ withResponse: true });
      const id = response.resource?.message?.id ?? '';
      await channel.messages.edit(id, 'edited with the bot token');
      return id;
    });
    fake.sendCommand({ name: 'imagine' });
    const id = await handled;
    expect(fake.message(id)?.content).toBe('edited with the bot token');
  });

  it('an expired interaction token gives 50027 to editReply, and the bot token keeps working', async () => {
    const { fake, client } = await setup();
    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      await interaction.deferReply();
      fake.expireToken(interaction.id);
      return interaction.editReply('too late').then(
        () => null,
        (err: unknown) => err,
      );
    });
    fake.sendCommand({ name: 'imagine' });
    const error = await handled;
    expect(error).toBeInstanceOf(DiscordAPIError);
    expect((error as DiscordAPIError).code).toBe(50027);
    expect((error as DiscordAPIError).status).toBe(401);
    const channel = client.channels.cache.get(fake.defaultChannelId) as TextChannel;
    await expect(channel.send('still logged in')).resolves.toBeDefined();
  });

  it('expireTokensAfter applies to every token older than the limit', async () => {
    const { fake, client } = await setup();
    fake.expireTokensAfter(30);
    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      await interaction.deferReply();
      await new Promise((r) => setTimeout(r, 60));
      return interaction.editReply('x').catch((err: unknown) => err);
    });
    fake.sendCommand({ name: 'imagine' });
    expect(((await handled) as DiscordAPIError).code).toBe(50027);
    expect(fake.callsTo('PATCH /webhooks/*')[0]?.status).toBe(401);
  });

  it('a 429 with retry_after 0.05 on an edit is retried by discord.js and succeeds', async () => {
    const { fake, client } = await setup();
    const channel = client.channels.cache.get(fake.defaultChannelId) as TextChannel;
    const posted = await channel.send('v1');
    const limited: RateLimitData[] = [];
    client.rest.on(RESTEvents.RateLimited, (info) => limited.push(info));
    fake.rateLimitNext({ route: 'PATCH /channels/:c/messages/:m', retryAfterSeconds: 0.05 });
    const edited = await channel.messages.edit(posted.id, 'v2');
    expect(edited.content).toBe('v2');
    const patches = fake.callsTo('PATCH /channels/:c/messages/:m');
    expect(patches.map((c) => c.status)).toEqual([429, 200]);
    expect(patches[0]?.response).toMatchObject({ message: 'You are being rate limited.', retry_after: 0.05, global: false });
    expect(fake.invalidRequestCount).toBe(1);
    expect(fake.message(posted.id)?.content).toBe('v2');
    expect(limited.length).toBeGreaterThanOrEqual(1);
  });

  it('rate limits the webhook edit route too', async () => {
    const { fake, client } = await setup();
    fake.rateLimitNext({ route: 'PATCH /webhooks/…', retryAfterSeconds: 0.05, times: 2 });
    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      await interaction.deferReply();
      return (await interaction.editReply('after two 429s')).content;
    });
    fake.sendCommand({ name: 'imagine' });
    expect(await handled).toBe('after two 429s');
    expect(fake.callsTo(/^PATCH \/webhooks\//).map((c) => c.status)).toEqual([429, 429, 200]);
  });

  it('registers commands and types command options from the registration', async () => {
    const { fake, client } = await setup();
    await client.application?.commands.set([
      {
        name: 'imagine',
        description: 'Make images',
        options: [
          { name: 'prompt', description: 'What', type: 3, required: true },
          { name: 'scale', description: 'Guidance', type: 10 },
        ],
      },
    ]);
    expect(fake.commands().map((c) => c['name'])).toEqual(['imagine']);
    const guildId = fake.defaultGuildId ?? '';
    await client.application?.commands.create({ name: 'review', description: 'Review' }, guildId);
    expect(fake.commands(guildId).map((c) => c['name'])).toEqual(['review']);

    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      await interaction.reply({ content: 'ok', flags: MessageFlags.Ephemeral });
      return { scale: interaction.options.getNumber('scale'), id: interaction.commandId };
    });
    fake.sendCommand({ name: 'imagine', options: { prompt: 'x', scale: 7 } });
    expect(await handled).toEqual({ scale: 7, id: fake.commands()[0]?.['id'] });
  });

  it('answers a late acknowledgement with Unknown interaction, a second one with 40060', async () => {
    const { fake, client } = await setup({ ackWindowMs: 40 });
    const late = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      await new Promise((r) => setTimeout(r, 80));
      return interaction.deferReply().catch((err: unknown) => err);
    });
    fake.sendCommand({ name: 'imagine' });
    expect(((await late) as DiscordAPIError).code).toBe(10062);

    const twice = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      await interaction.deferReply();
      // Bypass discord.js's own guard to show what Discord answers.
      return client.rest
        .post(`/interactions/${interaction.id}/${interaction.token}/callback`, { body: { type: 5 }, auth: false })
        .catch((err: unknown) => err);
    });
    fake.sendCommand({ name: 'imagine' });
    expect(((await twice) as DiscordAPIError).code).toBe(40060);
  });

  it('rejects payloads Discord would reject', async () => {
    const { fake, client } = await setup();
    const channel = client.channels.cache.get(fake.defaultChannelId) as TextChannel;
    const tooLong = await channel.send('x'.repeat(2001)).catch((err: unknown) => err);
    expect((tooLong as DiscordAPIError).code).toBe(50035);
    const files = Array.from({ length: 11 }, (_, i) => new AttachmentBuilder(PNG, { name: `${i}.png` }));
    const tooMany = await channel.send({ files }).catch((err: unknown) => err);
    expect((tooMany as DiscordAPIError).code).toBe(50035);
    expect(fake.messages(fake.defaultChannelId)).toHaveLength(0);
  });

  it('answers heartbeats and lets waitFor observe state changes', async () => {
    const { fake, client } = await setup({ heartbeatIntervalMs: 40 });
    // The first beat comes after interval × random, then every interval; two beats mean the first was acked.
    await fake.waitFor((f) => f.heartbeatCount >= 2, { timeoutMs: 2000, description: 'two heartbeats' });
    expect(client.ws.ping).toBeGreaterThanOrEqual(0);
    const channel = client.channels.cache.get(fake.defaultChannelId) as TextChannel;
    const from = fake.calls.length;
    void channel.send('later');
    const call = await fake.waitForCall('POST /channels/:c/messages', { from });
    expect(call.status).toBe(200);
    const msg = await fake.waitFor((f) => f.messages(fake.defaultChannelId).find((m) => m.content === 'later'));
    expect(msg.author['id']).toBe(fake.applicationId);
  });

  it('Components V2: a media gallery with attachment:// items resolves to the uploaded files', async () => {
    const { fake, client } = await setup();
    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      await interaction.deferReply();
      const gallery = new MediaGalleryBuilder().addItems(
        (item) => item.setURL('attachment://a.png'),
        (item) => item.setURL('attachment://b.png'),
      );
      const msg = await interaction.editReply({
        flags: MessageFlags.IsComponentsV2,
        components: [gallery],
        files: [new AttachmentBuilder(PNG, { name: 'a.png' }), new AttachmentBuilder(PNG, { name: 'b.png' })],
      });
      return msg.id;
    });
    fake.sendCommand({ name: 'imagine' });
    const message = fake.message(await handled);
    expect((message?.flags ?? 0) & MessageFlag.IsComponentsV2).toBe(MessageFlag.IsComponentsV2);
    expect(message?.attachments.map((a) => a.filename)).toEqual(['a.png', 'b.png']);
    const items = message?.components[0]?.['items'] as Array<{ media: { url: string; width: number } }>;
    expect(items.map((i) => i.media.url)).toEqual(message?.attachments.map((a) => a.url));
    expect(items[0]?.media.width).toBe(3);
  });

  it('DM commands carry a user and no member', async () => {
    const { fake, client } = await setup();
    const handled = nextInteraction(client, async (interaction) => {
      if (!interaction.isChatInputCommand()) throw new Error('not a command');
      await interaction.reply('hi in DM');
      return { guildId: interaction.guildId, member: interaction.member, user: interaction.user.id, ch: interaction.channelId };
    });
    const sent = fake.sendCommand({ name: 'imagine', guildId: null });
    expect(await handled).toEqual({ guildId: null, member: null, user: fake.defaultUser.id, ch: sent.channelId });
    expect(fake.messages(sent.channelId).map((m) => m.content)).toEqual(['hi in DM']);
  });

  it('after a gateway disconnect discord.js resumes and still receives interactions', async () => {
    const { fake, client } = await setup();
    const resumed = once(client, Events.ShardResume);
    fake.disconnectGateway(4000);
    await resumed;
    const handled = nextInteraction(client, async (interaction) => interaction.isChatInputCommand() && interaction.commandName);
    fake.sendCommand({ name: 'again' });
    expect(await handled).toBe('again');
    expect(fake.identifies).toHaveLength(1);
  });

  it('5xx answers are retried at once by @discordjs/rest', async () => {
    const { fake, client } = await setup();
    const channel = client.channels.cache.get(fake.defaultChannelId) as TextChannel;
    fake.failNext({ route: 'POST /channels/:c/messages', status: 502, times: 2 });
    await channel.send('eventually');
    expect(fake.callsTo('POST /channels/:c/messages').map((c) => c.status)).toEqual([502, 502, 200]);
    fake.delayNext({ route: 'POST /channels/:c/messages', ms: 30 });
    const from = fake.calls.length;
    // Watching before sending: the predicate sees the call the moment it arrives, whatever the machine's speed.
    const firstSight = fake.waitFor((f) => {
      const call = f.calls.find((c) => c.index >= from);
      return call ? { status: call.status } : undefined;
    });
    const slow = channel.send('slow');
    expect((await firstSight).status).toBeUndefined();
    await slow;
    expect(fake.calls[from]?.status).toBe(200);
  });

  it('refuses a wrong token on the gateway and on REST', async () => {
    const fake = await startFakeDiscord({ token: TOKEN });
    cleanups.push(() => fake.close());
    const client = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: fake.apiUrl } });
    cleanups.push(() => client.destroy());
    await expect(client.login('wrong-token')).rejects.toThrow(/token/i);
    expect(fake.callsTo('GET /gateway/bot')[0]?.status).toBe(401);
    expect(fake.identifies).toHaveLength(0);
  });
});

describe('fake Discord is as strict as Discord', () => {
  /** A raw REST call, so the test controls every header and byte. */
  const post = (fake: FakeDiscord, route: string, body: unknown, authorization?: string) =>
    fetch(`${fake.apiUrl}/v10${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(authorization !== undefined ? { authorization } : {}) },
      body: JSON.stringify(body),
    });

  it('answers a missing or wrong bot token with 401 and Discord’s error body, and creates nothing', async () => {
    const { fake } = await setup();
    const route = `/channels/${fake.defaultChannelId}/messages`;
    for (const authorization of [undefined, 'Bot wrong-token', `Bearer ${TOKEN}`, 'Bot ']) {
      const answer = await post(fake, route, { content: 'hello' }, authorization);
      expect(answer.status, String(authorization)).toBe(401);
      expect(answer.headers.get('content-type')).toBe('application/json');
      expect(await answer.json()).toEqual({ message: '401: Unauthorized', code: 0 });
    }
    expect(fake.callsTo('POST /channels/:c/messages').map((c) => c.authOk)).toEqual([false, false, false, false]);
    expect(fake.messages(fake.defaultChannelId)).toEqual([]);
    const ok = await post(fake, route, { content: 'hello' }, `Bot ${TOKEN}`);
    expect(ok.status).toBe(200);
    expect(fake.messages(fake.defaultChannelId).map((m) => m.content)).toEqual(['hello']);
  });

  it('adopts the first token it is shown when none was configured, then holds every call to it', async () => {
    const fake = await startFakeDiscord();
    cleanups.push(() => fake.close());
    const client = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: fake.apiUrl } });
    cleanups.push(() => client.destroy());
    const ready = once(client, Events.ClientReady);
    await client.login('adopted-token');
    await ready;
    expect(fake.callsTo('GET /gateway/bot')[0]?.authOk).toBe(true);
    expect((await post(fake, `/channels/${fake.defaultChannelId}/messages`, { content: 'x' }, 'Bot another-token')).status).toBe(401);
  });

  it('with strictToken: false, only records a wrong token', async () => {
    const { fake } = await setup({ strictToken: false });
    const answer = await post(fake, `/channels/${fake.defaultChannelId}/messages`, { content: 'hello' }, 'Bot wrong-token');
    expect(answer.status).toBe(200);
    expect(fake.callsTo('POST /channels/:c/messages')[0]?.authOk).toBe(false);
  });

  it('refuses a malformed allowed_mentions with 400 Invalid Form Body (50035) naming the field, and changes nothing', async () => {
    const { fake, client } = await setup();
    const channel = client.channels.cache.get(fake.defaultChannelId) as TextChannel;
    const posted = await channel.send({ content: 'v1', allowedMentions: { parse: [] } });
    const cases: [unknown, Record<string, unknown>][] = [
      [{ parse: ['nobody'] }, { parse: { '0': { _errors: [expect.objectContaining({ code: 'BASE_TYPE_CHOICES' })] } } }],
      [{ parse: 'users' }, { parse: { _errors: [expect.objectContaining({ code: 'LIST_TYPE_CONVERT' })] } }],
      [{ parse: ['users'], users: ['123456789012345678'] }, { _errors: [expect.objectContaining({ code: 'MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE' })] }],
      [{ users: ['not-a-snowflake'] }, { users: { '0': { _errors: [expect.objectContaining({ code: 'NUMBER_TYPE_COERCE' })] } } }],
      [{ replied_user: 'yes' }, { replied_user: { _errors: [expect.objectContaining({ code: 'BASE_TYPE_BOOLEAN' })] } }],
      ['none', { _errors: [expect.objectContaining({ code: 'DICT_TYPE_CONVERT' })] }],
    ];
    for (const [allowed, errors] of cases) {
      const label = JSON.stringify(allowed);
      const created = await post(fake, `/channels/${fake.defaultChannelId}/messages`, { content: 'x', allowed_mentions: allowed }, `Bot ${TOKEN}`);
      expect(created.status, label).toBe(400);
      expect(await created.json(), label).toEqual({ message: 'Invalid Form Body', code: 50035, errors: { allowed_mentions: errors } });
      const edit = await client.rest
        .patch(`/channels/${fake.defaultChannelId}/messages/${posted.id}`, { body: { content: 'v2', allowed_mentions: allowed } })
        .catch((err: unknown) => err);
      expect((edit as DiscordAPIError).code, label).toBe(50035);
    }
    expect(fake.messages(fake.defaultChannelId).map((m) => m.content)).toEqual(['v1']);
    expect(fake.messageHistory(posted.id)).toHaveLength(1);
  });

  it('refuses a malformed allowed_mentions in an interaction response, which then stays unanswered', async () => {
    const { fake, client } = await setup();
    const handled = nextInteraction(client, (interaction) =>
      client.rest
        .post(`/interactions/${interaction.id}/${interaction.token}/callback`, {
          body: { type: 4, data: { content: 'hi', allowed_mentions: { parse: ['all'] } } },
          auth: false,
        })
        .catch((err: unknown) => err),
    );
    const sent = fake.sendCommand({ name: 'imagine' });
    expect(((await handled) as DiscordAPIError).code).toBe(50035);
    expect(fake.interaction(sent.id)).toMatchObject({ acknowledged: false, callbacks: [{ type: 4, status: 400 }] });
    expect(fake.messages(fake.defaultChannelId)).toEqual([]);
  });

  it('keeps each request’s allowed_mentions: an edit that sends none is recorded without the earlier one', async () => {
    const { fake, client } = await setup();
    const channel = client.channels.cache.get(fake.defaultChannelId) as TextChannel;
    const posted = await channel.send({ content: 'v1', allowedMentions: { parse: [] } });
    expect(fake.message(posted.id)?.allowed_mentions).toEqual({ parse: [] });
    // The client has no default allowedMentions here: this edit sends none.
    await channel.messages.edit(posted.id, { content: 'v2 <@123456789012345678>' });
    expect(fake.callsTo('PATCH /channels/:c/messages/:m')[0]?.body).not.toHaveProperty('allowed_mentions');
    expect(fake.message(posted.id)?.allowed_mentions).toBeNull();
    await channel.messages.edit(posted.id, { content: 'v3', allowedMentions: { users: ['123456789012345678'] } });
    expect(fake.messageHistory(posted.id).map((v) => [v.content, v.allowed_mentions])).toEqual([
      ['v1', { parse: [] }],
      ['v2 <@123456789012345678>', null],
      ['v3', { users: ['123456789012345678'] }],
    ]);
  });
});
